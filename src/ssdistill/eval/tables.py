"""Result tables from evaluation records: plain text for the terminal, markdown for READMEs, rows for the report."""

from __future__ import annotations

from typing import Any

from ssdistill.eval.classes import class_note
from ssdistill.labels import is_primary, member_suffix, teacher_label

MODEL_GROUPS = ("teacher", "random_init", "student")  # rows: every teacher, then random-init students, then trained ones


def model_keys(rows: dict) -> list[str]:
    """The row labels of an evaluation in table order (``teacher``, ``teacher_<name>``, ``random_init``..., ``student``...)."""
    order = {g: i for i, g in enumerate(MODEL_GROUPS)}
    return sorted(rows, key=lambda label: (order.get(model_group(label), len(MODEL_GROUPS)), list(rows).index(label)))


def cell(value, digits: int = 1, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def evaluation_columns(evaluation: dict) -> list[tuple[str, str]]:
    """(key, header) of every metric present in a full evaluation."""
    columns = [(f"knn_{name}", f"k-NN {name.replace('_', ' ')}") for name in evaluation["protocols"]["knn"]]
    any_row = next(iter(evaluation["models"].values()))
    if "linear" in any_row:
        columns.append(("linear", "linear"))
    if any("classifier" in row for row in evaluation["models"].values()):
        columns.append(("classifier", "classifier top-1"))
    for fraction in any_row.get("few_shot", {}):
        columns.append((f"few_shot_{fraction}", f"{float(fraction):.0%} labels"))
    if "clustering" in any_row:
        columns += [("cluster_accuracy", "cluster acc"), ("cluster_nmi", "NMI"), ("cluster_ari", "ARI")]
    if any("teacher_alignment" in row for row in evaluation["models"].values()):
        columns += [("teacher_cka", "CKA with teacher"), ("teacher_dcor2", "dCor² with teacher")]
    return columns


def _digits(column: str) -> int:
    return 2 if column.startswith("teacher_") else 1  # alignment scores are fractions in [0, 1]


def model_rows(record: dict, label_names: dict[str, str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows (teacher, random init, student, then % retained) of one run's evaluation record."""
    from ssdistill.eval.suite import headline_metrics

    evaluation = record.get("evaluation")
    names = label_names or {}
    if not evaluation:  # k-NN only
        header = ["model", "k-NN top-1", "top-5", "params (M)", "GFLOPs", "images/s"]
        rows = []
        knn = record.get("knn") or {}
        for key in model_keys(knn):
            row = knn[key]
            if row:
                rows.append(
                    [
                        names.get(key, key),
                        cell(row["top1"], suffix="%"),
                        cell(row.get("top5"), suffix="%"),
                        cell(row["params_m"], 2),
                        cell(row.get("gflops"), 3),
                        cell(row["images_per_s"], 0),
                    ]
                )
        return header, rows
    columns = evaluation_columns(evaluation)
    header = ["model", *[title for _, title in columns], "params (M)", "GFLOPs", "images/s"]
    rows = []
    for key in model_keys(evaluation["models"]):
        row = evaluation["models"][key]
        if row:
            flat = headline_metrics(row)
            rows.append(
                [
                    names.get(key, key),
                    *[cell(flat.get(c), _digits(c)) for c, _ in columns],
                    cell(row["params_m"], 2),
                    cell(row["gflops"], 3),
                    cell(row["images_per_s"], 0),
                ]
            )
    kept = evaluation.get("retained_pct") or {}
    if kept:
        rows.append(["% of teacher retained", *[cell(kept.get(c), suffix="%") for c, _ in columns], "", "", ""])
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(header), *[line(r) for r in rows]])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    align = ["---", *["---:"] * (len(header) - 1)]
    return "\n".join("| " + " | ".join(map(str, cells)) + " |" for cells in [header, align, *rows])


def model_group(label: str) -> str | None:
    """``teacher``, ``random_init`` or ``student``: the group of an evaluation row label (its members and teachers
    carry a suffix)."""
    return next((g for g in MODEL_GROUPS if label == g or label.startswith(g + "_")), None)


def _member_tag(label: str) -> str:
    group = model_group(label) or ""
    return label[len(group) + 1 :]


def comparison_rows(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """One row per trained student of every run (each member of a cohort), after every teacher and random-init student
    of the runs. A reference row is shown once for runs that share it: same display name (``names`` of a record, see
    ``model_names``), same identity (``identities``, see ``model_identities``: a teacher's fingerprint, a random-init
    student's architecture, resolution and seed) and same evaluation split."""
    from ssdistill.eval.suite import headline_metrics

    full = all(r.get("evaluation") for r in records)  # else every run is shown by its k-NN alone

    def models(record: dict) -> dict:
        return record["evaluation"]["models"] if full else record.get("knn") or {}

    def metrics(record: dict, row: dict) -> dict:
        return headline_metrics(row) if full else {"knn": row["top1"]}

    columns = evaluation_columns(records[0]["evaluation"]) if full else [("knn", "k-NN top-1")]
    header = ["run", "model", *[t for _, t in columns], "params (M)", "images/s"]

    def line(first: str, second: str, record: dict, row: dict) -> list[str]:
        found = metrics(record, row)
        return [first, second, *[cell(found.get(c), _digits(c)) for c, _ in columns], cell(row["params_m"], 2), cell(row["images_per_s"], 0)]

    rows, shown = [], set()
    for group in ("teacher", "random_init"):
        for record in records:
            names, identities = record.get("names") or {}, record.get("identities") or {}
            for key in model_keys(models(record)):
                row = models(record)[key]
                display = names.get(key, key.replace("_", " "))
                identity = (display, identities.get(key), (record.get("data") or {}).get("val"))
                if model_group(key) == group and row and identity not in shown:
                    shown.add(identity)
                    rows.append(line(display, "", record, row))
    for record in records:
        for key in model_keys(models(record)):
            row = models(record)[key]
            if model_group(key) == "student" and row:
                tag = _member_tag(key)
                label = record.get("method", "?") + (f" [{tag}]" if tag else "")
                rows.append(line(record.get("name", record.get("run_dir", "?")), label, record, row))
    return header, rows


def model_names(results: dict) -> dict[str, str]:
    """Display names of a run record's rows: ``teacher efficientnet_lite0``, ``random-init mobilenetv3_small_100``,
    ``distilled mobilenetv3_small_100 (feature)``; a cohort's members and several teachers carry their names."""
    trained = results.get("teacher_in_training", True)
    reference = "" if trained is not False else " (reference, unused in training)"
    teachers = results.get("teachers") or ({"teacher": results["teacher"]} if results.get("teacher") else {})
    names = {"teacher": "teacher" + reference}
    for name, teacher in teachers.items():
        names[teacher_label(name)] = f"teacher {teacher['name']}" + ("" if name == "teacher" else f" [{name}]") + reference
    students = results.get("students") or {"student": results["student"]}
    for member, student in students.items():
        tag = "" if is_primary(member) else f" [{member}]"
        suffix = member_suffix(member)
        names[f"random_init{suffix}"] = f"random-init {student['arch']}{tag}"
        names[f"student{suffix}"] = f"{'distilled' if trained else 'trained'} {student['arch']}{tag} ({results['method']})"
    if len(students) > 1:
        names["student_ensemble"] = f"ensemble of the {len(students)} members, normalised features concatenated ({results['method']})"
    return names


def model_identities(results: dict) -> dict[str, str]:
    """What makes a reference row of a run record the same model in another run: a teacher's fingerprint (weights,
    preprocessing, tap), a random-init student's architecture, resolution and seed."""
    identities = {}
    for name, teacher in (results.get("teachers") or {}).items():
        identities[teacher_label(name)] = teacher.get("fingerprint")
    seed = results.get("seed")
    students = results.get("students") or {"student": results.get("student") or {}}
    for i, (member, student) in enumerate(students.items()):
        suffix = member_suffix(member)
        identities[f"random_init{suffix}"] = f"{student.get('arch')}@{student.get('resolution')}:seed{seed}+{i}"
    return identities


def task_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """Header and rows of a run's per-task evaluation (CKA's ``tasks``): clustering accuracy / NMI / ARI (%) of the
    task's teacher head and of the student's head on the task's evaluation split, k-means accuracy on the trained and
    random-init student's features, and the training pseudo-labels' purity; None for a run without tasks."""
    tasks = results.get("tasks")
    if not tasks:
        return None
    header = [
        "task",
        "teacher head ACC / NMI / ARI",
        "student head ACC / NMI / ARI",
        "student k-means ACC",
        "random-init k-means ACC",
        "student k-NN in the task",
        "pseudo-label purity",
    ]

    def scores(row: dict | None) -> str:
        return "–" if not row else f"{row['accuracy']:.1f} / {row['nmi']:.1f} / {row['ari']:.1f}"

    rows = []
    for name, row in tasks.items():
        rows.append(
            [
                f"{name} ({row['teacher']}, {row['head']}, {row['classes']} classes)",
                scores(row.get("teacher_head")),
                scores(row.get("student_head")),
                cell((row.get("student_kmeans") or {}).get("accuracy")),
                cell((row.get("random_init_kmeans") or {}).get("accuracy")),
                cell((row.get("student_knn") or {}).get("top1")),
                cell(row.get("pseudo_label_purity")),
            ]
        )
    return header, rows


def format_summary(results: dict[str, Any]) -> str:
    """Plain-text table: teacher, random-init student, distilled student (k-NN top-1), and the times."""
    lines = []
    knn = results.get("knn")
    names = model_names(results)
    k = results["protocol"]["knn"]["k"]
    if knn:
        width = max(len(names.get(key, key)) for key in knn) + 2
        classified = any("classifier" in row for row in knn.values())  # a method that trained classifiers (supervised MCL)
        lines.append(
            f"{'model':<{width}}{'k-NN top-1':>11}{'top-5':>8}{'params (M)':>12}{'images/s':>10}" + ("  classifier top-1" if classified else "")
        )
        for key in model_keys(knn):
            if key in knn:
                row = knn[key]
                scored = f"{row['classifier']['top1']:>17.1f}%" if "classifier" in row else ""
                lines.append(
                    f"{names.get(key, key):<{width}}{row['top1']:>10.1f}%{row.get('top5', float('nan')):>7.1f}%"
                    f"{row['params_m']:>12.2f}{row['images_per_s']:>10.0f}{scored}"
                )
        extra = f"; {results['retained_pct']:.1f}% of the teacher's k-NN retained" if results.get("retained_pct") else ""
        lines.append(f"(weighted k-NN, k={k}, on {results['data']['val']}{extra})")
        if note := class_note(results["data"].get("classes")):
            lines.append(f"(classes matched by name: {note})")
    else:
        lines.append(f"no k-NN numbers: {results.get('knn_note')}")
    if (tasks := task_rows(results)) is not None:
        header, rows = tasks
        lines.append("per task, on its evaluation split (ACC: Hungarian-matched clustering accuracy, %):")
        lines += ["  " + " | ".join(f"{h}: {v}" for h, v in zip(header, row)) for row in rows]
    t = results["timing"]
    parts = []
    if "teacher_signal_seconds" in t:
        parts.append(f"teacher signal {t['teacher_signal_seconds']:.0f} s")
    parts.append(f"training {t['train_seconds']:.0f} s ({t['train_images_per_s']:.0f} images/s)")
    if "eval_seconds" in t:
        parts.append(f"evaluation {t['eval_seconds']:.0f} s")
    lines.append("time: " + ", ".join(parts))
    lines.append(f"run directory: {results['run_dir']}")
    return "\n".join(lines)
