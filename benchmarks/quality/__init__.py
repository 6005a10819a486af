"""Quality benchmarks (docs/benchmarks.md): one row per method and benchmark, one command per tier.

The rows are data, benchmarks/rows.yaml (``rows.py`` reads and checks it; ``hooks.py`` holds the few per-row hooks it
names); the package holds the paths (``paths.py``), the tiers (``tiers.py``), measuring rows (``run.py``), reading their
records (``records.py``), the tables (``tables.py``), the documentation's generated blocks (``docs.py``), the smoke
tier's checks (``smoke.py``) and the command line (``__main__.py``).
"""

# what the other benchmark scripts read from here (speed.py, demo.py, spread.py, rob_targets.py, teacher_resolution.py)
from benchmarks.quality.docs import replace_block, show_table
from benchmarks.quality.paths import DOCS, README, REPO, RESULTS, SHARED_WEIGHTS, row_path

__all__ = ["DOCS", "README", "REPO", "RESULTS", "SHARED_WEIGHTS", "replace_block", "row_path", "show_table"]
