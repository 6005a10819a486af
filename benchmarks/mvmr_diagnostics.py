"""Where MV-MR's distillation stalls: per-term gradients at the backbone and the student's dependence on the teacher,
on training and on validation images, over training.

    python -m benchmarks.mvmr_diagnostics --config configs/q2/mvmr_kd.yaml [key=value ...] [--every 1]

trains (or resumes) the run the config describes with a diagnostics callback attached and prints, near the run's
start (after its first optimiser step: the two training batches it keeps are the first two it sees) and every
``--every`` epochs:

* the norm of the gradient each weighted loss term sends to the student's backbone (``mse``, ``std``, ``views``, each
  teacher's dCor term, each hand-crafted one), and beside them the gradient plain feature regression would send on
  the same batch (a cosine loss on centred teacher targets through a fresh head of the recipe's shape, seeded, so
  every epoch compares with the same kind of head) and each term's ratio to it;
* the bias-corrected dCor² of the student's projector output with the teacher's features, on two fixed training
  batches (the first two the run saw) and on the same number of fixed validation images: a gap between the two is
  the run fitting its training batches rather than the teacher;
* the same dCor² of the backbone's pooled features (what the evaluation and the export use) with the teacher on the
  validation images: whether the backbone or the projector carries the dependence.

The figures go to the run's metrics.csv (``diag/...`` columns) and to ``RUN/diagnostics.json``. Nothing the
diagnostics compute reaches the training: the gradients are taken with ``torch.autograd.grad`` (no ``.grad`` is
written), the BatchNorm statistics the extra forward passes touch and every submodule's mode are put back, and the
random state is forked. The two training batches are saved beside the run (diagnostics_batches.pt) so a resumed run
measures on the same ones, and diagnostics.json is rewritten after each measurement. The feature-regression gradient
goes through a fresh head: it is the gradient a feature-regression run sends at its start, not a trained one's.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import lightning as L
import torch
from torch import nn

COMMAND = "python -m benchmarks.mvmr_diagnostics"
SAVED_BATCHES = 2


def _to(batch, device, clone: bool = False):
    if isinstance(batch, torch.Tensor):
        return batch.to(device).clone() if clone else batch.to(device)
    if isinstance(batch, dict):
        return {k: _to(v, device, clone) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(v, device, clone) for v in batch)
    return batch


def _norm(grads) -> float:
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))


class Buffers:
    """The BatchNorm running statistics of a module, put back when the block ends (the diagnostics' forward passes in
    train mode would otherwise move them)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __enter__(self) -> None:
        self.saved = {name: b.detach().clone() for name, b in self.module.named_buffers()}

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            for name, b in self.module.named_buffers():
                b.copy_(self.saved[name])


def feature_regression_gradient(backbone_params, features: torch.Tensor, target: torch.Tensor, hidden: int = 2048, seed: int = 0) -> float:
    """The norm of the gradient plain feature regression (1 - cos through a fresh MLP head, centred targets) sends to
    ``backbone_params`` from ``features`` (computed from them with a graph)."""
    from ssdistill.losses.regression import center_batch, feature_regression_loss
    from ssdistill.models.heads import mlp

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = mlp([features.shape[1], hidden, target.shape[1]]).to(features.device)
    loss = feature_regression_loss(head(features.float()), center_batch(target.float()))
    return _norm(torch.autograd.grad(loss, backbone_params, retain_graph=True, allow_unused=True))


def dcor2(x: torch.Tensor, y: torch.Tensor) -> float:
    from ssdistill.losses.dependence import distance_correlation

    return float(distance_correlation(x, y, estimator="unbiased"))


def diagnose(module, batches: list[dict], val_images: torch.Tensor, val_teacher: torch.Tensor) -> dict:
    """The diagnostics of ``module`` (an MV-MR method module) now: per-term gradient norms at the backbone on
    ``batches`` (averaged), feature regression's beside them, and the dCor² figures (training batches' original
    views against their cached teacher rows; ``val_images`` against ``val_teacher``)."""
    from ssdistill.labels import teacher_label

    student, projector = module.student, module.projector
    params = [p for p in student.parameters() if p.requires_grad]
    signal = module.signals[teacher_label(module.cfg.primary_teacher)]
    grads: dict[str, list[float]] = {}
    z_train, t_train = [], []
    modes = {m: m.training for m in module.modules()}  # each submodule's own mode, put back at the end
    with Buffers(module), torch.random.fork_rng(devices=[]):  # no random draw of the run's is consumed here
        module.train()
        for batch in batches:
            terms = module.weighted_terms(batch)
            for name, value in terms.items():
                grads.setdefault(name, []).append(_norm(torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)))
            total = sum(terms.values())
            grads.setdefault("total", []).append(_norm(torch.autograd.grad(total, params, retain_graph=True, allow_unused=True)))
            features = student(batch["views"]["aug"])
            teacher = signal.for_batch(batch).detach().float()
            grads.setdefault("feature_regression", []).append(feature_regression_gradient(params, features, teacher))
        module.eval()
        with torch.no_grad():
            for batch in batches:
                z_train.append(projector(student(batch["views"]["original"])).float())
                t_train.append(signal.for_batch(batch).detach().float())
            backbone_val = torch.cat([student(chunk) for chunk in val_images.split(128)]).float()
            z_val = projector(backbone_val).float()
    for m, training in modes.items():
        m.train(training)
    mean = {name: sum(v) / len(v) for name, v in grads.items()}
    fr = mean.pop("feature_regression")
    return {
        "grad_norm": mean,
        "grad_norm_feature_regression": fr,
        "grad_ratio_to_feature_regression": {name: value / fr if fr else None for name, value in mean.items()},
        "dcor2_projector_teacher_train": dcor2(torch.cat(z_train), torch.cat(t_train)),
        "dcor2_projector_teacher_val": dcor2(z_val, val_teacher),
        "dcor2_backbone_teacher_val": dcor2(backbone_val, val_teacher),
        "val_images": len(val_images),
    }


class MVMRDiagnostics(L.Callback):
    """Keeps the run's first training batches and, at the start and every ``every`` epochs, logs :func:`diagnose`
    (``diag/...`` in metrics.csv) and appends it to ``history`` (written to RUN/diagnostics.json by the command)."""

    def __init__(self, run_dir: Path, val_images: torch.Tensor, val_teacher: torch.Tensor, every: int = 1) -> None:
        self.run_dir, self.val_images, self.val_teacher, self.every = Path(run_dir), val_images, val_teacher, every
        self.batches: list[dict] = []
        saved = self.run_dir / "diagnostics.json"
        self.history: list[dict] = json.loads(saved.read_text()) if saved.is_file() else []  # a resumed run's so far
        self.pending_start = False

    @property
    def kept(self) -> Path:
        return self.run_dir / "diagnostics_batches.pt"

    def on_train_start(self, trainer, pl_module) -> None:
        self.pending_start = trainer.global_step == 0  # a fresh run: measured once both batches are kept (after step 1)
        if not self.pending_start and self.kept.is_file():  # a resumed run measures on the batches it kept at its start
            self.batches = torch.load(self.kept, weights_only=False)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if len(self.batches) < SAVED_BATCHES:
            self.batches.append(_to(copy.copy(batch), "cpu", clone=True))
            if len(self.batches) == SAVED_BATCHES and trainer.is_global_zero:
                from ssdistill.files import atomic_output

                with atomic_output(self.kept) as tmp:
                    torch.save(self.batches, tmp)
        if self.pending_start and len(self.batches) == SAVED_BATCHES:
            self.pending_start = False
            self._measure(trainer, pl_module, epoch=0)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch + 1
        if self.batches and (epoch % self.every == 0 or epoch == trainer.max_epochs):
            self._measure(trainer, pl_module, epoch)

    def _measure(self, trainer, pl_module, epoch: int) -> None:
        if not trainer.is_global_zero:
            return
        device = pl_module.device
        found = diagnose(pl_module, [_to(b, device) for b in self.batches], self.val_images.to(device), self.val_teacher.to(device))
        self.history = [h for h in self.history if h["epoch"] != epoch] + [{"epoch": epoch, "step": trainer.global_step, **found}]
        from ssdistill.files import atomic_write_text

        atomic_write_text(self.run_dir / "diagnostics.json", json.dumps(self.history, indent=2))  # kept if the run is killed
        if epoch:  # the start is before the first step: nothing may be logged there
            flat = {"diag/dcor2_train": found["dcor2_projector_teacher_train"], "diag/dcor2_val": found["dcor2_projector_teacher_val"]}
            flat["diag/dcor2_backbone_val"] = found["dcor2_backbone_teacher_val"]
            flat.update({f"diag/grad_{name}": value for name, value in found["grad_norm"].items()})
            flat["diag/grad_feature_regression"] = found["grad_norm_feature_regression"]
            for name, value in flat.items():
                pl_module.log(name, value, on_step=False, on_epoch=True, rank_zero_only=True)


def validation_set(cfg, images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` fixed validation images (the seeded subset the alignment monitor would take) in the student's
    original view, and the teacher's pooled features of the same images."""
    from ssdistill.data.datasets import seeded_subset
    from ssdistill.data.views import original_view
    from ssdistill.engine.provider import TeacherProvider, open_split

    split = open_split(cfg, cfg.data.val)
    subset = seeded_subset(split, min(images, len(split)), cfg.trainer.seed)
    positions = subset.positions if hasattr(subset, "positions") else list(range(len(subset)))
    view = original_view(cfg.student.resolution)
    pixels = torch.stack([view(subset.load(i)) for i in range(len(subset))])
    name = cfg.primary_teacher  # the teacher term's teacher, with the output the run distils (cfg.teacher.output)
    table = TeacherProvider(cfg, split, "cpu").features(name, cfg.data.val, split, cfg.teachers[name].output)
    teacher = table[torch.tensor(positions)].float()
    return pixels, teacher


def table(history: list[dict]) -> str:
    """The diagnostics over training as a markdown table (one row per measurement)."""
    terms = [name for name in history[0]["grad_norm"] if name != "total"]
    header = ["epoch", "dCor² train", "dCor² val", "dCor² backbone val", *(f"|∇| {t}" for t in terms), "|∇| total", "|∇| feature regr."]
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    for h in history:
        cells = [
            str(h["epoch"]),
            *(f"{h[k]:.3f}" for k in ("dcor2_projector_teacher_train", "dcor2_projector_teacher_val", "dcor2_backbone_teacher_val")),
        ]
        cells += [f"{h['grad_norm'][t]:.3g}" for t in [*terms, "total"]] + [f"{h['grad_norm_feature_regression']:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(config: str | Path, overrides: list[str], every: int = 1, val_images: int = 256) -> tuple[Path, list[dict]]:
    """Train (or resume) the run with the diagnostics attached; returns its directory and the history."""
    from ssdistill import distill
    from ssdistill.recipe import build_config

    cfg = build_config(config, overrides)
    if cfg.method.name != "mvmr" or cfg.method.mode != "kd":
        raise SystemExit(f"{COMMAND} diagnoses MV-MR in distillation mode (method.name=mvmr, method.mode=kd), not {cfg.method.name}")
    if cfg.trainer.devices not in (1, "auto") or cfg.trainer.num_nodes != 1:
        raise SystemExit(f"{COMMAND} measures on one process: set trainer.devices=1 and trainer.num_nodes=1")
    if not cfg.run.name:
        raise SystemExit(f"{COMMAND} resumes its run by name: set run.name")
    run_dir = Path(cfg.run.dir) / cfg.run.name
    if (run_dir / "results.json").is_file():
        raise SystemExit(f"{run_dir} has finished: its diagnostics are in {run_dir / 'diagnostics.json'}")
    pixels, teacher = validation_set(cfg, val_images)
    callback = MVMRDiagnostics(run_dir, pixels, teacher, every)
    resume = run_dir if (run_dir / "checkpoints" / "last.ckpt").is_file() else None
    if resume is not None:
        record = distill(resume=resume, callbacks=[callback], quiet=True)
    else:
        record = distill(cfg, callbacks=[callback], quiet=True)
    if Path(record["run_dir"]) != run_dir:
        raise SystemExit(f"the run went to {record['run_dir']} instead of {run_dir}: its diagnostics are in {run_dir / 'diagnostics.json'}")
    return run_dir, callback.history


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="an MV-MR distillation config (method.mode=kd)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    parser.add_argument("--every", type=int, default=1, help="measure every N epochs (and at the start and the end)")
    parser.add_argument("--val-images", type=int, default=256, help="fixed validation images of the dependence figures")
    args = parser.parse_args(argv)
    run_dir, history = run(args.config, args.overrides, args.every, args.val_images)
    print(f"{run_dir}: diagnostics.json")
    print(table(history))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
