"""Where the quality benchmarks read and write: the repository, the row records, the documentation pages."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
README = REPO / "README.md"  # its one results table: benchmarks/headline.py
DOCS = REPO / "docs" / "benchmarks.md"  # the documentation site's benchmarks page: every table
SHARED_WEIGHTS = REPO.parent / "shared" / "weights"
ROWS_FILE = REPO / "benchmarks" / "rows.yaml"  # the rows, as data


def row_path(results_dir: Path, bench: str, method: str, tier: str) -> Path:
    """A row's record: ``<results>/<bench>/<row>-<tier>.json``."""
    return Path(results_dir) / bench / f"{method}-{tier}.json"


def shown(path: Path) -> str:
    """A path as a command line in the docs shows it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
