"""Run directories: one per run, never overwritten; files written atomically; locked while a process trains in them."""

from __future__ import annotations

import fcntl
import logging
import os
from datetime import datetime
from pathlib import Path

from ssdistill.distributed import launch_rank_world
from ssdistill.errors import ConfigError, StorageError

RUN_DIR_ENV = "SSDISTILL_RUN_DIR"  # set for DDP worker processes so they join the parent's run
log = logging.getLogger("ssdistill")


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


LOCK_FILE = "train.lock"  # flock'ed by the process that trains in the run directory; the kernel releases it when it dies
_held: dict[str, int] = {}  # run directory -> descriptor of its lock file, for the runs this process trains


def _forget_locks_in_child() -> None:
    """A forked child (a data-loading worker) closes its copies of the lock descriptors: a worker outliving a killed
    trainer for a few seconds must not keep the run locked."""
    for fd in _held.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)


def lock_run(run_dir: Path) -> None:
    """Lock ``run_dir`` for this process's training (until :func:`unlock_run` or the process ends); a run another
    process trains is refused in one line naming that process."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(
            f"{run_dir} is not writable ({exc.strerror}): a run writes its checkpoints and metrics there; make it writable, or "
            f"copy the run folder somewhere writable and resume the copy"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        held = busy(run_dir) or f"{run_dir} is being trained by another process"
        raise ConfigError(f"{held}; wait for it to end (or stop it) before resuming the run") from None
    except OSError as exc:  # a file system without locks (some network and FUSE mounts): train unlocked, and say so
        os.close(fd)
        log.warning("%s cannot be locked (%s): a second process training this run at the same time would not be refused", run_dir, exc.strerror)
        return
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[str(run_dir)] = fd


def unlock_run(run_dir: Path) -> None:
    fd = _held.pop(str(run_dir), None)
    if fd is not None:
        os.close(fd)


def training_process(run_dir: Path) -> int | None:
    """The id of the process training in ``run_dir`` now (0 when it cannot be read), or None when none is (or when the
    file system has no locks: training there is unlocked, see :func:`lock_run`)."""
    if str(run_dir) in _held:
        return os.getpid()
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else 0
    except OSError:  # no locks on this file system (ENOLCK and the like): nobody can hold one
        return None
    finally:
        os.close(fd)


def busy(run_dir: Path) -> str | None:
    """``RUN is being trained by process PID`` while a process trains in ``run_dir``, else None."""
    pid = training_process(run_dir)
    if pid is None:
        return None
    return f"{run_dir} is being trained by process {pid}" if pid else f"{run_dir} is being trained by another process"
