"""Keep ``metrics.csv`` whole across resumes, each (step, metric) once.

Lightning's CSV logger starts a fresh file when a run resumes. Before a resume from the checkpoint of step S,
ssdistill sets the rows logged so far aside (``metrics.before-resume.csv``), keeping only those the checkpoint includes:
rows logged at step S or later were lost work (a training step logs under the step count before it, so the batch after
the checkpoint logs under S) and are logged again by the resumed run. Once training ends, however it ends (finished,
interrupted, failed), ``metrics.csv`` becomes the rows set aside followed by the new ones. A process killed before that
leaves both files; the next resume folds them together the same way."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ssdistill.files import atomic_write_text

PREVIOUS = "metrics.before-resume.csv"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or 0)
    except ValueError:
        return 0.0


def _write(path: Path, rows: list[dict[str, str]]) -> None:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields and k is not None]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def set_aside(run_dir: Path, resumed_step: int) -> Path | None:
    """Before resuming from the checkpoint of ``resumed_step``: the rows logged before that step (of an earlier set-aside
    file and of ``metrics.csv``) into ``metrics.before-resume.csv``; ``metrics.csv`` is removed. None when nothing was
    logged yet."""
    current, previous = run_dir / "metrics.csv", run_dir / PREVIOUS
    parts = [path for path in (previous, current) if path.is_file()]
    if not parts:
        return None
    _write(previous, [row for path in parts for row in _rows(path) if _step(row) < resumed_step])
    current.unlink(missing_ok=True)
    return previous


def merge(run_dir: Path, previous: Path) -> None:
    """``metrics.csv`` = the rows set aside in ``previous`` + the rows logged since; ``previous`` is removed."""
    current = run_dir / "metrics.csv"
    _write(current, _rows(previous) + (_rows(current) if current.is_file() else []))
    previous.unlink()
