"""RoB (docs/methods/rob.md): the teacher replaces the target branch of DINO, BYOL/SimSiam regression and MSN. The multi-crop
views, the constant centre (the mean teacher target of one pass of global crops), the projection targets, that the
teacher never receives gradient, the EMA copy, config errors, and each base end to end."""

import json

import pytest
import torch
from torch.nn import functional as F

from ssdistill import distill
from ssdistill.engine.datasets import build_dataset
from ssdistill.engine.provider import TeacherProvider
from ssdistill.errors import ConfigError
from ssdistill.methods.rob.method import RoB
from ssdistill.recipe import build_config
from ssdistill.runs.assemble import train_source

from integration.common import assembled, assembled_run, tiny_config


def _assembled(tmp_path, **method):
    raw = tiny_config(tmp_path)
    raw["method"] = {"name": "rob", "projection_dim": 8, "local_crops": 2, **method}
    cfg = build_config(raw)
    return (cfg, *assembled(cfg))


def test_multi_crop_views_global_crops_at_the_teacher_s_resolution(tmp_path):
    raw = tiny_config(tmp_path, student={"resolution": 64}, teacher={"resolution": 96})
    raw["method"] = {"name": "rob", "local_crops": 3}
    cfg = build_config(raw)
    views = RoB.train_views(cfg, TeacherProvider(cfg, train_source(cfg)))
    assert sorted(views) == ["global0", "global1", "local0", "local1", "local2"]
    assert views["global0"].resolution == 96 and views["local0"].resolution == 32  # the student's copy is downsampled
    raw["method"] = {"name": "rob", "base": "regression", "projection_init": "identity"}
    regression = build_config(raw)
    assert sorted(RoB.train_views(regression, TeacherProvider(regression, train_source(regression)))) == ["global0", "global1"]


def test_the_constant_centre_is_the_mean_teacher_target_of_one_pass(tmp_path):
    """With aug.recipe=none the global crop is deterministic, so the centre can be recomputed image by image."""
    raw = tiny_config(tmp_path, aug={"recipe": "none"})
    raw["method"] = {"name": "rob", "projection_dim": 8, "local_crops": 1}
    cfg = build_config(raw)
    ctx = TeacherProvider(cfg, train_source(cfg))
    prepared = build_dataset(RoB, cfg, ctx, ctx.fulfil(RoB.teacher_needs(cfg))).tensors
    teacher, view = ctx.teacher(tap="pooled"), RoB.train_views(cfg, ctx)["global0"]
    with torch.no_grad():
        targets = [F.normalize(teacher(view(ctx.source.load(i)).unsqueeze(0)), dim=1) @ prepared["columns"] for i in range(len(ctx.source))]
    assert torch.allclose(prepared["center"], torch.cat(targets).mean(0), atol=1e-5)
    # the k-means columns: unit vectors, K of them, in the teacher's feature space
    assert prepared["columns"].shape == (teacher.dim, 8) and torch.allclose(prepared["columns"].norm(dim=0), torch.ones(8), atol=1e-5)


def test_the_constant_centre_is_seeded_per_image_whatever_the_workers_and_the_global_rng(tmp_path):
    """Each global crop of the centre's pass is drawn after seeding every generator from (seed, image), as the training
    loader does: the same centre with 0 and 2 data workers, and with the global RNG advanced before (a cold cache fill
    draws from it). The crops are random (the centre of the deterministic view differs), so the comparison means something."""
    import random

    import numpy as np

    raw = tiny_config(tmp_path, data={"train_subset": 24, "eval_batch_size": 8})
    raw["method"] = {"name": "rob", "projection_dim": 8, "local_crops": 1}
    centres = {}
    for workers, state, recipe in ((0, 1, "moco_v2"), (0, 2, "moco_v2"), (2, 1, "moco_v2"), (0, 1, "none")):
        cfg = build_config({**raw, "data": {**raw["data"], "num_workers": workers}, "aug": {"recipe": recipe}})
        ctx = TeacherProvider(cfg, train_source(cfg))
        ctx.features(tap="pooled")  # the cache filled before the global generators are set (a fill may draw from them)
        torch.manual_seed(state), random.seed(state), np.random.seed(state)
        torch.rand(state * 7)
        centres[workers, state, recipe] = build_dataset(RoB, cfg, ctx, ctx.fulfil(RoB.teacher_needs(cfg))).tensors["center"]
    assert torch.equal(centres[0, 1, "moco_v2"], centres[0, 2, "moco_v2"]), "the global RNG moved the centre"
    assert torch.allclose(centres[0, 1, "moco_v2"], centres[2, 1, "moco_v2"], atol=1e-6), "data.num_workers moved the centre"
    assert not torch.allclose(centres[0, 1, "moco_v2"], centres[0, 1, "none"], atol=1e-4)


@pytest.mark.parametrize(
    "base, method",
    [
        ("dino", {}),
        ("regression", {"projection_init": "identity"}),
        ("msn", {"student_prototypes": "teacher_frozen"}),
        ("dino", {"teacher_crops": "bank", "bank_repeats": 3}),
        ("msn", {"teacher_crops": "bank", "bank_repeats": 2}),
    ],
)
def test_a_step_trains_the_student_and_never_the_teacher(tmp_path, base, method):
    cfg, ctx, prepared, module = _assembled(tmp_path, base=base, **method)
    from torch.utils.data import DataLoader

    batch = next(iter(DataLoader(prepared.dataset, batch_size=8, shuffle=False)))
    loss = module.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.student.parameters())
    if not module.signal.online:  # a bank: the teacher's outputs are a fixed table, nothing to train
        assert not module.signal.table.requires_grad
        return
    teacher = module.signal.teacher
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert not any(p is q for p in module.parameters() for q in teacher.parameters())  # not part of the module
    if base == "msn":
        assert set(module.terms) == {"cross_entropy", "memax"}


def test_config_errors_and_the_logits_defaults():
    with pytest.raises(ConfigError, match="identity is for base=regression"):
        build_config({"method": {"name": "rob", "projection_init": "identity"}})
    with pytest.raises(ConfigError, match="set target=projection"):
        build_config({"method": {"name": "rob", "target": "logits", "student_prototypes": "teacher_frozen"}})
    logits = build_config({"method": {"name": "rob", "target": "logits"}}).method
    assert logits.effective("center") == "none" and build_config({"method": {"name": "rob"}}).method.effective("center") == "constant"


def test_logits_students_are_unbounded_and_can_fit_a_peaked_teacher_softmax(tmp_path):
    """target=logits is plain soft distillation at τ_s = 1: the student's logits are a plain linear layer (a cosine head
    would be bounded in [-1, 1], its softmax over the tiny teacher's 1,000 classes at most e / (e + 999 / e) < 0.01 on
    any class, far under the 0.6 asked here)."""
    cfg, ctx, prepared, module = _assembled(tmp_path, target="logits")
    images = torch.randn(4, 3, cfg.student.resolution, cfg.student.resolution)
    logits = module.student_outputs(images)
    assert torch.allclose(logits, module.head(module.student(images)) @ module.prototypes.T)
    module.train()
    optimizer = torch.optim.Adam([*module.head.parameters(), module.prototypes], lr=0.05)
    for _ in range(60):  # fit a one-hot-like teacher target per image
        loss = F.cross_entropy(module.student_outputs(images), torch.arange(4))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    module.eval()
    assert torch.softmax(module.student_outputs(images), dim=1).diagonal().min() > 0.6


def test_too_many_kmeans_columns_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="lower method.projection_dim"):
        _assembled(tmp_path, projection_dim=1000)


def test_the_bank_replays_the_exact_global_crop_boxes(tmp_path):
    """teacher_crops=bank: each item's two global crops are two distinct crops of its image's bank, rendered for the student
    from the stored parameters (the teacher's box, flip and colours), drawn with the global crop scale; the bank row is the
    teacher on that very crop; the constant centre is the mean target over the bank; the layout describes the items."""
    from ssdistill.data.replay import AugParams, render

    raw = tiny_config(tmp_path)
    raw["method"] = {"name": "rob", "projection_dim": 8, "local_crops": 1, "teacher_crops": "bank", "bank_repeats": 3, "global_scale": (0.6, 1.0)}
    cfg = build_config(raw)
    run = assembled_run(cfg)
    ctx, prepared, fulfilment = run.ctx, run.prepared, run.fulfilment
    params, repeats = fulfilment.bank.params, fulfilment.bank.repeats
    assert repeats == 3 and len(params) == 3 * len(ctx.source)
    assert fulfilment.records["teacher"]["crop_scale"] == [0.6, 1.0] and fulfilment.approximations == ("teacher_bank(3)",)
    areas = params[:, 2] * params[:, 3]  # height and width as fractions of the image: the crop's share of its area
    assert areas.min() > 0.55 and areas.max() <= 1.0
    teacher, signal = ctx.teacher(tap="pooled"), fulfilment.signals["teacher"]
    torch.manual_seed(1)
    for index in (0, 5, 17):
        item = prepared.dataset[index]
        rows = [item["bank_row0"], item["bank_row1"]]
        assert rows[0] != rows[1] and all(index * 3 <= r < index * 3 + 3 for r in rows)
        image = ctx.source.load(index)
        for g, row in enumerate(rows):
            crop = AugParams.from_row(params[row])
            assert torch.equal(item["views"][f"global{g}"], render(image, crop, cfg.student.resolution))
            with torch.no_grad():
                online = teacher(render(image, crop, teacher.preprocess.resolution, teacher.preprocess.interpolation).unsqueeze(0))
            assert torch.allclose(signal(torch.tensor([row])), online.float(), atol=2e-2, rtol=1e-2)  # the bank is stored in fp16
        assert item["views"]["local0"].shape[-1] == cfg.student.resolution // 2
    projected = F.normalize(signal.table.float(), dim=1) @ prepared.tensors["columns"]
    assert torch.allclose(prepared.tensors["center"], projected.mean(0), atol=1e-5)
    layout = RoB.batch_layout(cfg, ctx)
    assert layout.views == {"global0": 32, "global1": 32, "local0": 16} and set(layout.keys) == {"bank_row0", "bank_row1"}


def test_a_bank_run_records_its_approximation(tmp_path):
    raw = tiny_config(tmp_path, trainer={"epochs": 1})
    raw["method"] = {"name": "rob", "projection_dim": 8, "local_crops": 1, "teacher_crops": "bank", "bank_repeats": 2}
    results = distill(raw, quiet=True)
    assert "teacher_bank(2)" in results["approximations"] and results["signals"]["teacher"]["from"] == "cache (bank)"
    with pytest.raises(ConfigError, match="bank_repeats"):
        build_config({"method": {"name": "rob", "teacher_crops": "bank", "bank_repeats": 1}})


def test_a_logits_bank_is_the_classifier_of_the_pooled_bank(tmp_path):
    """target=logits with a bank reads the pooled bank (one fill serves both taps) through the teacher's classifier: each
    row equals the teacher's logits on the replayed crop; the cache holds the pooled bank only; the record says so."""
    from ssdistill.cache.store import cache_root
    from ssdistill.data.replay import AugParams, render

    raw = tiny_config(tmp_path)
    raw["method"] = {"name": "rob", "projection_dim": 8, "local_crops": 1, "teacher_crops": "bank", "bank_repeats": 2, "target": "logits"}
    run = assembled_run(build_config(raw))
    ctx, fulfilment = run.ctx, run.fulfilment
    record = fulfilment.records["teacher"]
    assert record["tap"] == "logits" and record["from"] == "cache (bank of pooled outputs, through the teacher's classifier)"
    keys = [json.loads(path.read_text())["key"] for path in cache_root().rglob("manifest.json")]
    ours = {key["tap"] for key in keys if key["view"].startswith("bank:R=2:") and key["n"] == 2 * len(ctx.source)}
    assert ours == {"pooled"}
    teacher, signal = ctx.teacher(tap="logits"), fulfilment.signals["teacher"]
    params = fulfilment.bank.params
    assert signal.table.shape == (2 * len(ctx.source), teacher.dim)
    for row in (0, 3, 2 * len(ctx.source) - 1):
        crop = render(ctx.source.load(row // 2), AugParams.from_row(params[row]), teacher.preprocess.resolution, teacher.preprocess.interpolation)
        with torch.no_grad():
            online = teacher(crop.unsqueeze(0))[0]
        assert torch.allclose(signal(torch.tensor([row]))[0].float(), online, atol=2e-2, rtol=1e-2)  # the bank is stored in fp16


def test_logits_are_derived_from_pooled_only_when_the_head_is_the_classifier(tmp_path):
    """classifier_of_pooled: timm's classifier when logits = classifier(pooled); None when the head does more after the
    pooled output (here a non-linearity wrapped around the classifier) or when the teacher taps a module."""
    from ssdistill.config import TeacherConfig
    from ssdistill.models.teachers import build_teacher

    config = tiny_config(tmp_path)["teacher"]
    teacher = build_teacher(TeacherConfig(**{**config, "output": "logits"}))
    head = teacher.classifier_of_pooled()
    assert head is teacher.model.get_classifier()
    forward_head = teacher.model.forward_head
    teacher.model.forward_head = lambda x, pre_logits=False: forward_head(x, pre_logits) if pre_logits else torch.tanh(forward_head(x))
    assert teacher.classifier_of_pooled() is None
    tapped = build_teacher(TeacherConfig(**{**config, "output": "module:layer1"}))
    assert tapped.classifier_of_pooled() is None


def _dino_head_checkpoint(path, dim=96, bottleneck=8, out=12):
    """A DINO full checkpoint's teacher head (3-layer MLP, bottleneck, unit last layer rows), nested as DINO saves it."""
    torch.manual_seed(5)
    head = {
        "head.mlp.0.weight": torch.randn(24, dim) * 0.1,
        "head.mlp.0.bias": torch.zeros(24),
        "head.mlp.2.weight": torch.randn(24, 24) * 0.2,
        "head.mlp.2.bias": torch.zeros(24),
        "head.mlp.4.weight": torch.randn(bottleneck, 24) * 0.2,
        "head.mlp.4.bias": torch.zeros(bottleneck),
        "head.last_layer.weight_g": torch.ones(out, 1),
        "head.last_layer.weight_v": torch.randn(out, bottleneck),
    }
    torch.save({"teacher": head, "epoch": 1}, path)
    return path


@pytest.mark.parametrize("prototypes", ["own", "teacher_frozen"])
def test_the_teacher_checkpoint_s_own_head_is_the_target(tmp_path, prototypes):
    """target=head: the teacher's targets are its checkpoint head on its pooled output (12 logits here); the constant
    centre is their mean; teacher_frozen students score against the head's last layer; a step trains the student."""
    from ssdistill.models.ssl_head import read_ssl_head, ssl_head

    path = _dino_head_checkpoint(tmp_path / "dino_full.pth")
    raw = tiny_config(tmp_path, aug={"recipe": "none"})
    raw["method"] = {"name": "rob", "target": "head", "teacher_head": str(path), "local_crops": 1, "student_prototypes": prototypes}
    cfg = build_config(raw)
    ctx, prepared, module = assembled(cfg)
    head = read_ssl_head(path, "teacher.head.")
    teacher, view = ctx.teacher(tap="pooled"), RoB.train_views(cfg, ctx)["global0"]
    with torch.no_grad():
        pooled = torch.cat([teacher(view(ctx.source.load(i)).unsqueeze(0)) for i in range(len(ctx.source))])
    assert torch.allclose(prepared.tensors["center"], ssl_head(pooled, head).mean(0), atol=1e-5)
    assert module.dino_center.shape == (12,) and torch.equal(prepared.tensors["columns"], head["last"].T)
    batch = next(iter(torch.utils.data.DataLoader(prepared.dataset, batch_size=8)))
    images = F.interpolate(batch["views"]["global0"], size=(32, 32), mode="bilinear", antialias=True)
    scores = module.student_outputs(images)
    assert scores.shape == (8, 12)
    if prototypes == "teacher_frozen":
        with torch.no_grad():
            bottleneck = F.normalize(module.head(module.student(images)), dim=1)
        assert bottleneck.shape[1] == 8 and torch.allclose(scores, bottleneck @ head["last"].T, atol=1e-5)
    loss = module.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.student.parameters())


def test_a_head_that_does_not_fit_the_teacher_is_a_one_line_error(tmp_path):
    path = _dino_head_checkpoint(tmp_path / "vit_b.pth", dim=768)
    with pytest.raises(ConfigError, match="takes 768-d inputs but the teacher's pooled output is 96-d"):
        _assembled(tmp_path, target="head", teacher_head=str(path))
    with pytest.raises(ConfigError, match="method.teacher_head=CHECKPOINT"):
        build_config({"method": {"name": "rob", "target": "head"}})


def test_msn_drops_patch_tokens_of_a_vit_student_s_anchor_crops_only(tmp_path):
    """base=msn with a ViT student: the global (anchor) crops reach the blocks with 8 of their 16 patch tokens at
    patch_drop 0.5 (plus the class token), the local (focal) crops with all of theirs; evaluation sees every token and the
    student is left as it was."""
    raw = tiny_config(tmp_path, student={"arch": "test_vit", "resolution": 64})
    raw["method"] = {"name": "rob", "base": "msn", "projection_dim": 8, "local_crops": 1, "patch_drop": 0.5}
    cfg = build_config(raw)
    ctx, prepared, module = assembled(cfg)
    tokens = []
    module.student.backbone.blocks[0].register_forward_pre_hook(lambda block, args: tokens.append(args[0].shape[1]))
    batch = next(iter(torch.utils.data.DataLoader(prepared.dataset, batch_size=4)))
    module.train()
    module.training_step(batch, 0)
    assert tokens == [1 + 8, 1 + 4]  # global crops at 64 px: 16 patches, half kept; local crops at 32 px: 4 patches, all kept
    assert isinstance(module.student.backbone.patch_drop, torch.nn.Identity)
    module.eval()
    tokens.clear()
    module.student(batch["views"]["local0"])
    assert tokens == [1 + 4]
    _, _, cnn_prepared, cnn = _assembled(tmp_path, base="msn", patch_drop=0.5)  # a student without patch tokens: no effect
    cnn_batch = next(iter(torch.utils.data.DataLoader(cnn_prepared.dataset, batch_size=4)))
    torch.manual_seed(0)
    dropped = cnn.training_step(cnn_batch, 0)
    cnn.cfg.method.patch_drop = 0.0
    torch.manual_seed(0)
    assert torch.equal(dropped, cnn.training_step(cnn_batch, 0))


def test_every_configurable_base_is_one_small_class():
    """method.base names one class each (methods/rob/{dino,regression,msn}.py), all of one interface; the step itself
    has no per-base branch (the base gives the head, the outputs and the loss)."""
    import inspect
    import typing

    from ssdistill.methods.rob.base import RoBBase
    from ssdistill.methods.rob.config import RoBConfig
    from ssdistill.methods.rob.method import BASES

    assert set(BASES) == set(typing.get_args(RoBConfig.model_fields["base"].annotation))
    assert all(issubclass(base, RoBBase) for base in BASES.values())
    assert [name for name, base in BASES.items() if not base.local_crops] == ["regression"]
    assert "m.base" not in inspect.getsource(RoB.training_step) and "m.base" not in inspect.getsource(RoB.student_outputs)
