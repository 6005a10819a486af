"""The RoB method module: the teacher runs online on the global crops, which the dataset renders at the teacher's
resolution (the student's copy is downsampled), so both see the same crop; or (``teacher_crops: bank``) its outputs are
read from a cached bank of ``bank_repeats`` global crops per image drawn with the global crop scale, and each step's two
global crops are two distinct crops of the bank, replayed for the student at its resolution (the same boxes, flips and
colours; recorded as the approximation ``teacher_bank(R)``, 6.3). Every base shares the step: the teacher's targets on
the two global crops, the student on every crop (batched per resolution), then the base's loss (dino.py,
regression.py, msn.py).

Several processes (DDP, docs/distributed.md): the batch statistics are those of the global batch, as in the official DINO and
MSN code, so 2 processes × B images give the numbers of 1 process × 2B on the same images (each base says which). Not
batch statistics, so not reduced: the constant centre, the k-means and random columns (seeded, from the shared cache)
and the bank. Still per process: the BatchNorm statistics of the student and its head (as every method here; DINO's
own code converts them to SyncBatchNorm). In one process every reduction is the identity and the numbers are those of
the local batch.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ssdistill.cache.bank import BankCrops
from ssdistill.config import DistillConfig
from ssdistill.data.views import augmented_view
from ssdistill.engine.contract import BatchLayout, Preparation, TeacherNeed
from ssdistill.engine.module import DistillMethod
from ssdistill.methods.rob.base import RoBBase
from ssdistill.methods.rob.config import RoBConfig
from ssdistill.methods.rob.dino import Dino
from ssdistill.methods.rob.msn import MSN
from ssdistill.methods.rob.regression import Regression
from ssdistill.methods.rob.targets import GLOBAL, project, target_tap, target_tensors, target_width
from ssdistill.models.students import patch_dropout

BASES: dict[str, type[RoBBase]] = {"dino": Dino, "regression": Regression, "msn": MSN}  # method.base -> its class


class RoB(DistillMethod):
    name = "rob"
    config_class = RoBConfig
    label = "RoB"
    description = "RoB: a joint-embedding SSL method (DINO, BYOL/SimSiam regression, MSN) whose target branch is the frozen teacher"

    def __init__(self, cfg, students, signals, **context) -> None:
        super().__init__(cfg, students, signals, **context)
        m = cfg.method
        self.signal = self.signals["teacher"]
        self.variant = BASES[m.base](m)
        width = target_width(m, self.signal.dim, self.prepared)
        self.head = self.variant.head(self.student.dim, width, self.prepared.get("columns"))
        self.variant.add_parameters(self, width)

    # ----- declarations --------------------------------------------------------------------------
    @classmethod
    def teacher_needs(cls, cfg: DistillConfig) -> dict:
        m = cfg.method
        if m.teacher_crops == "bank":
            return {"teacher": TeacherNeed("bank", tap=target_tap(m), repeats=m.bank_repeats, crop_scale=tuple(m.global_scale))}
        return {"teacher": TeacherNeed("augmented", tap=target_tap(m))}

    @classmethod
    def train_views(cls, cfg: DistillConfig, ctx) -> dict:
        """The global crops (rendered at the teacher's resolution; with a bank, ``BankCrops`` replays them instead) and the
        local crops at theirs (the bases that use them)."""
        m = cfg.method
        views = {}
        if m.teacher_crops == "online":
            teacher = ctx.teacher(tap=target_tap(m)).preprocess
            scale = {"crop_scale_min": m.global_scale[0], "crop_scale_max": m.global_scale[1]}
            views = {name: augmented_view(teacher.resolution, cfg.aug.model_copy(update=scale), teacher.interpolation) for name in GLOBAL}
        if BASES[m.base].local_crops:
            local = m.local_resolution or max(8, cfg.student.resolution // 2)
            for i in range(m.local_crops):
                scale = {"crop_scale_min": m.local_scale[0], "crop_scale_max": m.local_scale[1]}
                views[f"local{i}"] = augmented_view(local, cfg.aug.model_copy(update=scale))
        return views

    @classmethod
    def prepare(cls, cfg: DistillConfig, ctx) -> Preparation | None:
        """What the targets read (targets.py), the bank's dataset with a bank, and what the base prepares (dino with
        center=constant: the mean teacher target over one pass of global crops, each crop seeded per image)."""
        m, tensors = cfg.method, target_tensors(cfg, ctx)
        views, dataset, table = cls.train_views(cfg, ctx), None, None
        if m.teacher_crops == "bank":  # the bank the teacher need reads (the provider read it once, for both)
            table, params = ctx.bank(m.bank_repeats, tap=target_tap(m), crop_scale=tuple(m.global_scale))
            dataset = BankCrops(ctx.source, params, m.bank_repeats, cfg.student.resolution, len(GLOBAL), views, name="global")
        BASES[m.base](m).prepare(ctx, tensors, views.get("global0"), table)
        return Preparation(dataset=dataset, tensors=tensors)

    @classmethod
    def batch_layout(cls, cfg: DistillConfig, ctx) -> BatchLayout | None:
        if cfg.method.teacher_crops == "online":
            return None
        views = {name: cfg.student.resolution for name in GLOBAL} | {name: view.resolution for name, view in cls.train_views(cfg, ctx).items()}
        rows = len(ctx.source) * cfg.method.bank_repeats
        return BatchLayout(views, ("bank_row0", "bank_row1"), {"bank_row0": rows, "bank_row1": rows})

    # ----- training ------------------------------------------------------------------------------
    def student_outputs(self, images: torch.Tensor) -> torch.Tensor:
        """Student logits over the K targets (dino, msn: cosine to the prototypes; dino with target=logits: a plain linear
        layer; regression: the prediction)."""
        return self.variant.outputs(self, self.head(self.student(images)))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        m, views, index = self.cfg.method, batch["views"], batch["index"]
        with torch.no_grad():
            if m.teacher_crops == "bank":
                targets = [project(self.signal(batch[f"bank_row{g}"]), self.prepared, m) for g in range(len(GLOBAL))]
            else:
                targets = [project(self.signal(index, views[name]), self.prepared, m) for name in GLOBAL]
        size = (self.cfg.student.resolution,) * 2
        crops = [
            views[name] if views[name].shape[-2:] == size else F.interpolate(views[name], size=size, mode="bilinear", antialias=True)
            for name in GLOBAL
        ]
        locals_ = [views[name] for name in sorted(views) if name.startswith("local")]
        # the student on every crop, batched per resolution
        with patch_dropout(self.student, self.variant.patch_drop):  # MSN's masked anchors (ViT students)
            outputs = list(self.student_outputs(torch.cat(crops)).chunk(len(crops)))
        if locals_:
            outputs += list(self.student_outputs(torch.cat(locals_)).chunk(len(locals_)))
        loss, terms = self.variant.loss(self, outputs, targets)
        return self.log_loss(loss, **terms)
