"""The benchmark rows, read from benchmarks/rows.yaml (its header describes every key) and checked entry by entry: a bad
entry stops the harness with one line naming the file, the row and what to change."""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.quality import hooks
from benchmarks.quality.paths import REPO, ROWS_FILE

BENCHES = ("q1", "q2", "q3", "q3c")
TASK_BENCHES = ("q3", "q3c")  # two tasks, each taught by its own teacher (benchmarks/amalgamation.py)
SMOKE_BENCHES = ("q2", "q3c")  # the benchmarks of the smoke tier (tiers.py)
TIER_NAMES = ("smoke", "cpu", "gpu")
GROUPS = ("baseline", "published", "ablation", "recipe", "cohort", "task")
SMOKE_TEST_GROUPS = ("a", "b")  # tests/bench/test_smoke_tier.py (a) and test_smoke_tier_b.py (b)
DEFAULT_RECIPE = "configs/{bench}/{row}.yaml"
REQUIRED = ("benches", "label", "group")
ROW_KEYS = (*REQUIRED, "recipe", "overrides", "tiers", "labels", "bench_labels", "notes", "smoke")
SMOKE_KEYS = ("test", "untested", "knn_margin", "loss_drop", "loss_from_epoch")
CHECK_KEYS = ("knn_margin", "dcor2_margin", "loss_drop", "classifier_min", "task_margin")
TOP_KEYS = ("smoke_checks", "shared", "rows")


@dataclass(frozen=True)
class Row:
    name: str
    benches: tuple[str, ...]
    label: str
    group: str
    recipe: str = DEFAULT_RECIPE
    overrides: dict = field(default_factory=dict)
    tiers: dict = field(default_factory=dict)
    labels: bool = False
    bench_labels: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    smoke: dict = field(default_factory=dict)

    def recipe_path(self, bench: str) -> Path:
        return REPO / self.recipe.format(bench=bench, row=self.name)

    def label_on(self, bench: str) -> str:
        return self.bench_labels.get(bench, self.label)

    def tier_overrides(self, tier: str) -> dict:
        """The row's overrides on ``tier`` (its inline overrides, then its tier's), a fresh copy to merge into."""
        merged = copy.deepcopy(self.overrides)
        merge(merged, copy.deepcopy(self.tiers.get(tier) or {}))
        return merged


@dataclass
class Catalogue:
    rows: dict[str, Row]
    checks: dict[str, float]
    source: Path = ROWS_FILE
    _teacher: dict[str, bool] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.rows)

    def on(self, bench: str) -> list[str]:
        """The rows of benchmark ``bench``, in table order."""
        return [name for name, row in self.rows.items() if bench in row.benches]

    def label(self, name: str, bench: str | None = None) -> str:
        return self.rows[name].label if bench is None else self.rows[name].label_on(bench)

    def uses_labels(self, name: str) -> bool:
        return name in self.rows and self.rows[name].labels

    def in_group(self, group: str) -> tuple[str, ...]:
        return tuple(name for name, row in self.rows.items() if row.group == group)

    def has_teacher(self, name: str) -> bool:
        """Whether the row trains with a teacher: its method's declaration (``teacher_needs``) on its recipe."""
        if name not in self._teacher:
            from ssdistill.methods.registry import METHODS
            from ssdistill.recipe import build_config

            row = self.rows[name]
            cfg = build_config(row.recipe_path(row.benches[0]), row.overrides)
            self._teacher[name] = bool(METHODS[cfg.method.name].teacher_needs(cfg))
        return self._teacher[name]

    def smoke_rows(self) -> list[tuple[str, str]]:
        """(bench, row) of every row of the smoke tier."""
        return [(bench, name) for bench in SMOKE_BENCHES for name in self.on(bench)]

    def smoke_tests(self) -> dict[str, tuple[tuple[str, str], ...]]:
        """{test group: (bench, row), ...} of the rows the smoke tests run."""
        return {g: tuple((b, n) for b, n in self.smoke_rows() if self.rows[n].smoke.get("test") == g) for g in SMOKE_TEST_GROUPS}

    def smoke_untested(self) -> dict[tuple[str, str], str]:
        """{(bench, row): why} of the smoke tier's rows the tests leave out."""
        return {(b, n): self.rows[n].smoke["untested"] for b, n in self.smoke_rows() if "untested" in self.rows[n].smoke}

    def knn_margin(self, name: str) -> float:
        return (self.rows[name].smoke if name in self.rows else {}).get("knn_margin", self.checks["knn_margin"])


def merge(base: dict, extra: dict) -> dict:
    """Merge ``extra`` into ``base`` in place, section by section (a key already there keeps its place)."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def _unknown(where: str, key, valid) -> str:
    close = difflib.get_close_matches(str(key), valid, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{where} has an unknown key '{key}'{hint}; its keys are {', '.join(valid)}"


def _row(source: Path, name: str, entry) -> Row:
    where = f"{source.name}: row '{name}'"
    if not isinstance(entry, dict):
        raise SystemExit(f"{where} is not a mapping of keys ({', '.join(REQUIRED)}, ...)")
    for key in entry:
        if key not in ROW_KEYS:
            raise SystemExit(_unknown(where, key, ROW_KEYS))
    for key in REQUIRED:
        if key not in entry:
            raise SystemExit(f"{where} has no '{key}' (every row needs {', '.join(REQUIRED)})")
    benches = entry["benches"] if isinstance(entry["benches"], list) else [entry["benches"]]
    for bench in benches:
        if bench not in BENCHES:
            raise SystemExit(f"{where} lists benchmark '{bench}', not one of {', '.join(BENCHES)}")
    if entry["group"] not in GROUPS:
        raise SystemExit(f"{where} has group '{entry['group']}', not one of {', '.join(GROUPS)}")
    for tier in entry.get("tiers") or {}:
        if tier not in TIER_NAMES:
            raise SystemExit(f"{where} has overrides for tier '{tier}', not one of {', '.join(TIER_NAMES)}")
    for hook in entry.get("notes") or ():
        if hook not in hooks.NOTES:
            raise SystemExit(f"{where} names note hook '{hook}', not one of {', '.join(hooks.NOTES)} (benchmarks/quality/hooks.py)")
    row = Row(
        name,
        tuple(benches),
        str(entry["label"]),
        entry["group"],
        entry.get("recipe", DEFAULT_RECIPE),
        entry.get("overrides") or {},
        entry.get("tiers") or {},
        bool(entry.get("labels", False)),
        entry.get("bench_labels") or {},
        tuple(entry.get("notes") or ()),
        entry.get("smoke") or {},
    )
    for bench in row.benches:
        if not row.recipe_path(bench).is_file():
            raise SystemExit(f"{where} on {bench}: no recipe {row.recipe_path(bench).relative_to(REPO)}; write it, or set the row's recipe")
    _check_smoke(where, row)
    return row


def _check_smoke(where: str, row: Row) -> None:
    smoke = row.smoke
    for key in smoke:
        if key not in SMOKE_KEYS:
            raise SystemExit(_unknown(f"{where}: smoke", key, SMOKE_KEYS))
    on_smoke = [b for b in row.benches if b in SMOKE_BENCHES]
    if on_smoke and ("test" in smoke) == ("untested" in smoke):
        raise SystemExit(
            f"{where} runs on the smoke tier ({', '.join(on_smoke)}): give it smoke: {{test: a}} (or b), or smoke: {{untested: <why>}}, not "
            + ("both" if "test" in smoke else "neither")
        )
    if not on_smoke and ("test" in smoke or "untested" in smoke):
        raise SystemExit(f"{where} has smoke test/untested but runs on no smoke-tier benchmark ({', '.join(SMOKE_BENCHES)})")
    if "test" in smoke and smoke["test"] not in SMOKE_TEST_GROUPS:
        raise SystemExit(f"{where}: smoke test '{smoke['test']}' is not one of {', '.join(SMOKE_TEST_GROUPS)}")
    start = smoke.get("loss_from_epoch", 0)
    if not (isinstance(start, int) or start in hooks.EPOCHS):
        raise SystemExit(
            f"{where}: smoke loss_from_epoch '{start}' is neither an epoch nor one of {', '.join(hooks.EPOCHS)} (benchmarks/quality/hooks.py)"
        )


def load(path: Path = ROWS_FILE) -> Catalogue:
    """The catalogue of ``path``; SystemExit with one line for a bad entry."""
    import yaml

    path = Path(path)
    data = yaml.safe_load(path.read_text()) or {}
    for key in data:
        if key not in TOP_KEYS:
            raise SystemExit(_unknown(path.name, key, TOP_KEYS))
    checks = data.get("smoke_checks") or {}
    for key in CHECK_KEYS:
        if key not in checks:
            raise SystemExit(f"{path.name}: smoke_checks has no '{key}' (it needs {', '.join(CHECK_KEYS)})")
    for key in checks:
        if key not in CHECK_KEYS:
            raise SystemExit(_unknown(f"{path.name}: smoke_checks", key, CHECK_KEYS))
    rows = {str(name): _row(path, str(name), entry) for name, entry in (data.get("rows") or {}).items()}
    if not rows:
        raise SystemExit(f"{path.name} lists no rows: add them under 'rows:'")
    return Catalogue(rows, {k: float(v) for k, v in checks.items()}, path)


CATALOGUE = load()


def catalogue() -> Catalogue:
    """The catalogue in use (tests swap ``rows.CATALOGUE`` for one of their own)."""
    return CATALOGUE


def recipe_path(bench: str, method: str) -> Path:
    """The recipe a row trains on ``bench``; SystemExit when the benchmark has no such row."""
    rows = catalogue().rows
    path = rows[method].recipe_path(bench) if method in rows else REPO / DEFAULT_RECIPE.format(bench=bench, row=method)
    if method not in rows or bench not in rows[method].benches or not path.is_file():
        raise SystemExit(f"no recipe {path.relative_to(REPO)}: benchmark {bench} has no row for {method} (benchmarks/rows.yaml)")
    return path


# the default catalogue's facts under the names other modules (headline.py, doc_tables.py) read
METHODS = CATALOGUE.names
LABELS = {name: row.label for name, row in CATALOGUE.rows.items()}
WITH_LABELS = frozenset(name for name, row in CATALOGUE.rows.items() if row.labels)  # rows whose training reads the class labels
RECIPE_ROWS = CATALOGUE.in_group("recipe")
