"""Students built from a config, and a finished (or killed) run read back from its folder: the config, the method and
every member's weights from one read of the checkpoint (``load_run``), for ``evaluate``, ``export`` and the API."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ssdistill.config import DistillConfig, StudentConfig
from ssdistill.engine.module import DistillMethod
from ssdistill.engine.resume import run_checkpoint, trained_epochs
from ssdistill.engine.rundir import existing_run_dir
from ssdistill.engine.trackers import IDS_FILE, send_files
from ssdistill.errors import ModelError
from ssdistill.methods.registry import METHODS
from ssdistill.models.students import Student
from ssdistill.recipe import build_config


def build_student(student: StudentConfig, seed: int) -> Student:
    """A random-init student; its weights are a function of ``seed`` alone."""
    torch.manual_seed(seed)
    return Student(student.arch, student.mean, student.std, student.channels_last, student.model_args, student.resolution)


def build_students(method: type[DistillMethod], cfg: DistillConfig) -> dict[str, Student]:
    """The method's student members, member i seeded with ``trainer.seed + i`` (one member: the run's seed); a member
    that is a copy of another (``DistillMethod.copied_members``, for example an EMA copy) starts as that member's exact
    copy and is not trained by the optimiser."""
    members, copies = method.run_members(cfg), method.run_copies(cfg)
    built = {member: build_student(spec, cfg.trainer.seed + i) for i, (member, spec) in enumerate(members.items()) if member not in copies}
    for member, source in copies.items():
        built[member] = copy.deepcopy(built[source]).requires_grad_(False)
    return {member: built[member] for member in members}


def member_state(state: dict, member: str) -> dict:
    """The weights of student ``member`` in a checkpoint's state dict (its keys under ``<member>.``)."""
    prefix = f"{member}."
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


@dataclass
class LoadedRun:
    """A run read back: its config, method, the checkpoint read (path, step, epochs it trained) and every student member
    with its weights (``students``, in the method's member order) and the classifiers the method trained."""

    run_dir: Path
    cfg: DistillConfig
    method: type[DistillMethod]
    checkpoint: Path
    step: int | None
    epochs: int
    students: dict[str, Student]
    classifiers: dict[str, nn.Module]

    @property
    def resolution(self) -> dict[str, int]:
        return {member: spec.resolution for member, spec in self.method.run_members(self.cfg).items()}


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None, members: list[str] | None = None, classifiers: bool = True) -> LoadedRun:
    """Read run ``run_dir`` back from ``checkpoint`` (default: its newest readable one, normally ``checkpoints/last.ckpt``),
    reading the checkpoint once; ``members``: only those students (default: every member; ``[None]``: the first);
    ``classifiers``: also the classifiers the method trained (the evaluation scores them; an export leaves them)."""
    run = existing_run_dir(run_dir)
    return _read(run, build_config(run / "config.yaml"), checkpoint, members, classifiers)


def _read(run: Path, cfg: DistillConfig, checkpoint: str | Path | None, members: list[str | None] | None, classifiers: bool) -> LoadedRun:
    method = METHODS[cfg.method.name]
    specs = method.run_members(cfg)
    if members is not None:
        members = [member or next(iter(specs)) for member in members]
    for member in members or ():
        if member not in specs:
            raise ModelError(f"the run has no student member '{member}'; its members are {', '.join(specs)}")
    path, contents = run_checkpoint(run, checkpoint)
    state = contents["state_dict"]
    students = {}
    for member in members or specs:
        students[member] = build_student(specs[member], cfg.trainer.seed)
        students[member].load_state_dict(member_state(state, member))
    trained = method.classifiers_from_checkpoint(cfg, state) if classifiers else {}
    return LoadedRun(run, cfg, method, path, contents.get("global_step"), trained_epochs(contents), students, trained)


def load_student_from_run(run_dir: str | Path, checkpoint: str | Path | None = None, member: str | None = None) -> tuple[DistillConfig, Student]:
    """Rebuild a run's student ``member`` (default: its first) and load its weights from ``checkpoint`` (default: the
    run's newest readable checkpoint, normally ``checkpoints/last.ckpt``)."""
    run = existing_run_dir(run_dir)
    cfg = build_config(run / "config.yaml")
    loaded = _read(run, cfg, checkpoint, [member], classifiers=False)
    return cfg, next(iter(loaded.students.values()))


def send_to_run_trackers(run: str | Path, paths: list[Path], folder: str = "") -> list[str]:
    """``engine.trackers.send_files`` for a finished run's directory (``ssdistill eval``'s evaluation.json,
    ``ssdistill report``'s report.html): nothing to do, and nothing read, for a run without trackers."""
    run_dir = Path(run)
    if not (run_dir / IDS_FILE).is_file():
        return []
    return send_files(build_config(run_dir / "config.yaml"), run_dir, paths, folder)
