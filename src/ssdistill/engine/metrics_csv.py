"""Keep ``metrics.csv`` whole across resumes.

Lightning's CSV logger starts a fresh file when a run resumes; ssdistill sets the old file aside first
and afterwards writes one file with the rows logged up to the resumed checkpoint followed by the new ones
(rows logged after the checkpoint were lost work and are re-run, so they are dropped)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ssdistill.files import atomic_write_text

PREVIOUS = "metrics.before-resume.csv"


def set_aside(run_dir: Path) -> Path | None:
    current = run_dir / "metrics.csv"
    if not current.is_file():
        return None
    previous = run_dir / PREVIOUS
    if previous.is_file():  # resumed before: fold the older part in first
        merge(run_dir, previous, upto_step=None, new=current)
    current.replace(previous)
    return previous


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def merge(run_dir: Path, previous: Path, upto_step: int | None, new: Path | None = None) -> None:
    """Write ``metrics.csv`` = rows of ``previous`` with step <= ``upto_step`` + rows of ``new``; remove ``previous``."""
    new = new or run_dir / "metrics.csv"
    old_rows = [r for r in _rows(previous) if upto_step is None or int(float(r.get("step") or 0)) <= upto_step]
    new_rows = _rows(new) if new.is_file() else []
    fields: list[str] = []
    for row in old_rows + new_rows:
        fields += [k for k in row if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(old_rows + new_rows)
    atomic_write_text(run_dir / "metrics.csv", buffer.getvalue())
    previous.unlink()
