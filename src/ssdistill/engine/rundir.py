"""Run directories: one per run, never overwritten; files written atomically."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from ssdistill.distributed import launch_rank_world
from ssdistill.errors import ConfigError

RUN_DIR_ENV = "SSDISTILL_RUN_DIR"  # set for DDP worker processes so they join the parent's run


def new_run_dir(parent: str | Path, name: str | None, method: str) -> Path:
    """Create ``parent/name`` (default ``<method>-<timestamp>``); if it exists, add -2, -3, ... instead of reusing it."""
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    parent = Path(parent).expanduser()
    base = name or f"{method}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if launch_rank_world()[0] > 0:  # launched by torchrun/SLURM: rank 0 creates, the others join
        if not name:
            raise ConfigError("multi-process launches need run.name so every process writes to the same run directory")
        return parent / base
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"run.dir={parent} is a file, not a folder: choose another run.dir")
    for attempt in range(1, 1000):
        candidate = parent / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            parent.mkdir(parents=True, exist_ok=True)
            candidate.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise ConfigError(f"cannot create a run directory under run.dir={parent} ({exc.strerror}): choose a writable run.dir") from None
        if attempt > 1:
            print(f"run directory {parent / base} exists; writing to {candidate}")
        return candidate
    raise ConfigError(f"too many runs named {base} under {parent}; choose another run.name")


def existing_run_dir(path: str | Path) -> Path:
    run = Path(path).expanduser()
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"{run} is not a run directory (no config.yaml); pass the folder a previous `ssdistill distill` created")
    return run
