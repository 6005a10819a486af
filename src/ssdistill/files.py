"""Writing files so that a reader never sees half of one, and saying in one line why a write failed (a full disk, a
quota, a read-only folder): the lowest floor of the package (imports nothing of it)."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same folder, hidden name; never the system temp folder) to write to; it
    replaces ``path`` only when the block succeeds (never a half-written file), with ordinary permissions (mkstemp's
    are 0600); on an error it is removed, and a file-system error names ``path`` rather than the temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) == tmp:
            exc.filename = str(path)  # the user knows the file they asked for, not our hidden staging name
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (flushed to disk before the rename)."""
    with atomic_output(path) as tmp, open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def free_bytes(folder: Path) -> int | None:
    """Bytes free for this user in ``folder`` (or its nearest existing parent); None when the system cannot say."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def size_text(nbytes: int | float) -> str:
    """``1.2 GB``, ``340 MB``, ``12 kB``, ``512 B`` (decimal units, as ``df -H`` shows them)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            value = nbytes / scale
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{int(nbytes)} B"


def write_failure(exc: OSError, folder: Path, what: str, need: int | None = None) -> str:
    """The start of a one-line error for ``exc``, raised while writing ``what`` into ``folder`` (the caller adds what
    to do): how much space it needs and how much there is for a full disk or quota, else the system's reason."""
    if exc.errno in NO_SPACE:
        free = free_bytes(folder)
        reason = "the disk quota is exceeded" if exc.errno == errno.EDQUOT else "no space left on the device"
        needs = f"needs {size_text(need)}" if need else "needs more space"
        has = f", {size_text(free)} free" if free is not None and exc.errno != errno.EDQUOT else ""
        return f"{what} {needs} in {folder} ({reason}{has})"
    if exc.errno in NOT_WRITABLE:
        return f"cannot write {what} in {folder}: the folder is not writable ({exc.strerror})"
    return f"cannot write {what} in {folder} ({exc.strerror or type(exc).__name__})"


def remedy(exc: OSError) -> str:
    """What the user can do about a write's ``exc`` where it happened: free space, make the folder writable, or check
    the disk (an I/O error, a network file system that failed)."""
    if exc.errno in NO_SPACE:
        return "free space there"
    if exc.errno in NOT_WRITABLE:
        return "make the folder writable"
    return "check the disk"
