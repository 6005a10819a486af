"""The markdown tables of a benchmark and tier, built from the row records: the main table (every row trained without
labels; the recipe group has its own table), the cohorts table (the cohort group, member by member), the recipe table
(with the time to a share of the teacher's k-NN) and, on the two-task benchmarks, the task table."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.quality import hooks, rows
from benchmarks.quality.docs import replace_block
from benchmarks.quality.paths import RESULTS, row_path
from benchmarks.quality.records import TTQ_FRACTIONS, duration, metrics, primary_label, teacher_labels, time_to_quality
from benchmarks.quality.rows import TASK_BENCHES
from benchmarks.quality.tiers import TIERS
from ssdistill.eval.tables import cell


def notes(method: str, record: dict) -> str:
    """A row's notes column: no teacher, labels, the row's note hooks, the record's approximations and deviations."""
    catalogue = rows.catalogue()
    row = catalogue.rows[method]
    found = []
    if not catalogue.has_teacher(method):
        found.append("no teacher")
    if row.labels:
        found.append("trained with the class labels")
    method_config = (record.get("config") or {}).get("method") or {}
    found += [hooks.NOTES[hook](method_config) for hook in row.notes if method_config]
    found += [str(a) for a in [*(record.get("approximations") or []), *(record.get("deviations") or [])]]
    if record.get("superseded"):
        found.append(f"superseded: {record['superseded']}")
    return "; ".join(found)


def _records(bench: str, tier: str, results_dir: Path, names) -> dict[str, dict]:
    return {m: json.loads(row_path(results_dir, bench, m, tier).read_text()) for m in names if row_path(results_dir, bench, m, tier).is_file()}


def table(bench: str, tier: str, results_dir: Path = RESULTS) -> str:
    """Markdown table of every finished row of one benchmark and tier (teacher and random init first). A method
    without a current row shows its superseded row (``superseded/<bench>/``, measured under older defaults), marked."""
    catalogue = rows.catalogue()
    found = {}
    for method in (n for n, row in catalogue.rows.items() if not row.labels and row.group != "recipe"):
        for path in (row_path(results_dir, bench, method, tier), row_path(Path(results_dir) / "superseded", bench, method, tier)):
            if path.is_file():
                found[method] = json.loads(path.read_text())
                break
    if not found:
        return f"No {bench} rows of tier {tier} yet: run `python -m benchmarks.quality --tier {tier} --bench {bench}`.\n"
    current = [r for r in found.values() if not r.get("superseded")] or list(found.values())
    reference = next((r for r in current if r.get("evaluation")), current[0])
    teacher, random_init = metrics(reference, primary_label(reference)), metrics(reference, "random_init")
    teachers = {}  # every teacher of any row, evaluated as in its row: name -> metrics
    for record in [reference, *current]:
        for label, name in teacher_labels(record).items():
            teachers.setdefault(name, metrics(record, label))
    dates = sorted(r["created"][:10] for r in found.values())
    machine = reference.get("machine") or {}
    gpu = machine.get("gpu") or "no GPU"
    versions = reference.get("versions") or {}
    lines = [
        (
            f"{bench.upper()}, tier `{tier}` ({TIERS[tier].description}); student {reference['student']['arch']} at "
            f"{reference['student']['resolution']} px, teacher {(reference.get('teacher') or {}).get('name', '–')}; "
            f"rows from {dates[0]} to {dates[-1]} on {machine.get('cpus', '?')} CPU cores, {gpu}, torch {versions.get('torch', '?')}; "
            f"`python -m benchmarks.quality --tier {tier} --bench {bench}`"
        ),
        "",
        "| model | k-NN k20 | k-NN k200 | linear | % of teacher (k-NN) | % of teacher (linear) | CKA with teacher | dCor² with teacher | train time | train img/s | notes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]

    def pct(value, ref):
        return None if value is None or not ref else 100.0 * value / ref

    def line(label, figures, seconds=None, speed=None, note=""):
        lines.append(
            f"| {label} | {cell(figures['k20'])} | {cell(figures['k200'])} | {cell(figures['linear'])} | "
            f"{cell(pct(figures['k20'], teacher['k20']), 0)} | {cell(pct(figures['linear'], teacher['linear']), 0)} | "
            f"{cell(figures['cka'], 2)} | {cell(figures['dcor2'], 2)} | {duration(seconds)} | {cell(speed, 0)} | {note} |"
        )

    for name, figures in teachers.items():
        line(f"teacher ({name})", figures)
    line("random-init student", random_init)
    for method, record in found.items():
        timing = record.get("timing") or {}
        label = catalogue.label(method, bench)
        line(
            label + (" (superseded, see notes)" if record.get("superseded") else ""),
            metrics(record, "student"),
            timing.get("train_seconds"),
            timing.get("train_images_per_s"),
            notes(method, record),
        )
        ema = metrics(record, "student_ema")
        if ema["k20"] is not None:  # the same run's EMA copy (trainer.ema_momentum): a second student row, never the headline
            momentum = ((record.get("config") or {}).get("trainer") or {}).get("ema_momentum")
            line(f"{label}: its EMA copy" + (f" (momentum {momentum})" if momentum else ""), ema, note="trained in the run above")
    return "\n".join(lines) + "\n"


def cohort_table(bench: str, tier: str, results_dir: Path = RESULTS) -> str | None:
    """Markdown table of the cohort rows (MCL and its baseline): every member with its own random-init student, and
    the ensemble; None when there is none yet."""
    catalogue = rows.catalogue()
    found = _records(bench, tier, results_dir, catalogue.in_group("cohort"))
    if not found:
        return None
    lines = [
        (
            f"{bench.upper()}, tier `{tier}`: cohort rows, every member (no teacher in training); "
            f"`python -m benchmarks.quality --tier {tier} --bench {bench} --only {' '.join(found)}`"
        ),
        "",
        "| row | member | k-NN k20 | k-NN k200 | linear | classifier top-1 | its random init (k-NN k20) | train time (whole cohort) | notes |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for method, record in found.items():
        knn = record.get("knn") or {}
        members = record.get("students") or {"student": record["student"]}
        seconds = (record.get("timing") or {}).get("train_seconds")
        for position, (member, student) in enumerate([*members.items(), ("ensemble", None)]):
            label = "student" if member == "student" else f"student_{member}"
            if label not in knn:
                continue
            figures = metrics(record, label)
            classifier = (knn[label].get("classifier") or {}).get("top1")
            random_init = metrics(record, label.replace("student", "random_init", 1))["k20"] if student else None
            name = f"{member}: {student['arch']}" if student else "ensemble (features concatenated)"
            first = position == 0
            lines.append(
                f"| {catalogue.label(method, bench) if first else ''} | {name} | {cell(figures['k20'])} | {cell(figures['k200'])} | "
                f"{cell(figures['linear'])} | {cell(classifier)} | {cell(random_init)} | {duration(seconds) if first else ''} | "
                f"{notes(method, record) if first else ''} |"
            )
    return "\n".join(lines) + "\n"


def recipe_table(bench: str, tier: str, results_dir: Path = RESULTS) -> str | None:
    """Markdown table of the recommended recipe's rows (issue 23): on Q1 its ablation, one ingredient added per row, with
    the time to 80 / 85 / 90 % of the teacher's k-NN; None when there is none yet."""
    catalogue = rows.catalogue()
    found = _records(bench, tier, results_dir, catalogue.in_group("recipe"))
    if not found:
        return None
    reference = next(iter(found.values()))
    teacher = metrics(reference, primary_label(reference))
    shares = " / ".join(f"{f:.0%}" for f in TTQ_FRACTIONS)
    lines = [
        (
            f"{bench.upper()}, tier `{tier}`: the recommended recipe{', its ingredients added one at a time' if bench == 'q1' else ''}; "
            f"teacher k-NN {cell(teacher['k20'])}, linear {cell(teacher['linear'])}; time to a share of the teacher's k-NN: training "
            f"seconds until the k-NN monitor (every 2 epochs, student or its EMA) first reached it; "
            f"`python -m benchmarks.quality --tier {tier} --bench {bench} --only {' '.join(found)}`"
        ),
        "",
        f"| row | k-NN k20 | linear | % of teacher (k-NN) | EMA copy k-NN k20 | train time | time to {shares} of teacher k-NN | notes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for method, record in found.items():
        student = metrics(record, "student")
        ema = (record.get("knn") or {}).get("student_ema", {}).get("top1")
        share = None if not teacher["k20"] or student["k20"] is None else 100.0 * student["k20"] / teacher["k20"]
        reached = " / ".join(duration(t) if t is not None else "–" for t in time_to_quality(record).values())
        lines.append(
            f"| {catalogue.label(method, bench)} | {cell(student['k20'])} | {cell(student['linear'])} | {cell(share, 0)} | {cell(ema)} | "
            f"{duration((record.get('timing') or {}).get('train_seconds'))} | {reached} | {notes(method, record)} |"
        )
    return "\n".join(lines) + "\n"


def task_table(bench: str, tier: str, results_dir: Path = RESULTS) -> str:
    """The Q3 table (benchmarks/amalgamation.py) of every finished row of a two-task benchmark."""
    from benchmarks import amalgamation

    catalogue = rows.catalogue()
    found = _records(bench, tier, results_dir, catalogue.names)
    if not found:
        return f"No {bench} rows of tier {tier} yet: run `python -m benchmarks.quality --tier {tier} --bench {bench}`.\n"
    labels = {name: catalogue.label(name, bench) for name in found}
    return amalgamation.table(bench, tier, found, labels, metrics, duration, notes)


def bench_table(bench: str, tier: str, results_dir: Path = RESULTS) -> str:
    return task_table(bench, tier, results_dir) if bench in TASK_BENCHES else table(bench, tier, results_dir)


def write_table(bench: str, tier: str, results_dir: Path = RESULTS, readme: Path | None = None) -> str:
    """Write the benchmark's tables to ``<results>/<bench>-<tier>[-cohorts|-recipe].md`` and, given the docs page,
    replace their blocks there."""
    from ssdistill.files import atomic_write_text

    markdown = bench_table(bench, tier, results_dir)
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(results_dir) / f"{bench}-{tier}.md", markdown)
    extra = {"cohorts": cohort_table(bench, tier, results_dir), "recipe": recipe_table(bench, tier, results_dir)}
    for name, content in extra.items():
        if content is not None:
            atomic_write_text(Path(results_dir) / f"{bench}-{tier}-{name}.md", content)
    if readme is not None:
        replace_block(readme, f"bench:{bench}-{tier}", markdown)
        for name, content in extra.items():
            if content is not None and f"<!-- bench:{bench}-{tier}-{name} -->" in readme.read_text():
                replace_block(readme, f"bench:{bench}-{tier}-{name}", content)
    return markdown
