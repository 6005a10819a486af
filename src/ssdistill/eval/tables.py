"""Result tables from evaluation records: plain text for the terminal, markdown for READMEs, rows for the report."""

from __future__ import annotations

MODEL_ORDER = ("teacher", "random_init", "student")


def _cell(value, digits: int = 1, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def evaluation_columns(evaluation: dict) -> list[tuple[str, str]]:
    """(key, header) of every metric present in a full evaluation."""
    columns = [(f"knn_{name}", f"k-NN {name.replace('_', ' ')}") for name in evaluation["protocols"]["knn"]]
    any_row = next(iter(evaluation["models"].values()))
    if "linear" in any_row:
        columns.append(("linear", "linear"))
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
        for key in MODEL_ORDER:
            row = (record.get("knn") or {}).get(key)
            if row:
                rows.append([names.get(key, key), _cell(row["top1"], suffix="%"), _cell(row.get("top5"), suffix="%"),
                             _cell(row["params_m"], 2), _cell(row.get("gflops"), 3), _cell(row["images_per_s"], 0)])
        return header, rows
    columns = evaluation_columns(evaluation)
    header = ["model", *[title for _, title in columns], "params (M)", "GFLOPs", "images/s"]
    rows = []
    for key in MODEL_ORDER:
        row = evaluation["models"].get(key)
        if row:
            flat = headline_metrics(row)
            rows.append([names.get(key, key), *[_cell(flat.get(c), _digits(c)) for c, _ in columns],
                         _cell(row["params_m"], 2), _cell(row["gflops"], 3), _cell(row["images_per_s"], 0)])
    kept = evaluation.get("retained_pct") or {}
    if kept:
        rows.append(["% of teacher retained", *[_cell(kept.get(c), suffix="%") for c, _ in columns], "", "", ""])
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(header), *[line(r) for r in rows]])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    align = ["---", *["---:"] * (len(header) - 1)]
    return "\n".join("| " + " | ".join(map(str, cells)) + " |" for cells in [header, align, *rows])


def comparison_rows(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """One row per run (its student), plus the teacher and random init of the first run that has them."""
    from ssdistill.eval.suite import headline_metrics

    def metrics(record: dict, key: str) -> dict | None:
        if record.get("evaluation"):
            row = record["evaluation"]["models"].get(key)
            return None if row is None else {**headline_metrics(row), "_row": row}
        row = (record.get("knn") or {}).get(key)
        return None if row is None else {"knn": row["top1"], "_row": row}

    full = all(r.get("evaluation") for r in records)
    columns = evaluation_columns(records[0]["evaluation"]) if full else [("knn", "k-NN top-1")]
    header = ["run", "model", *[t for _, t in columns], "params (M)", "images/s"]
    rows = []
    for key in ("teacher", "random_init"):
        for record in records:
            found = metrics(record, key)
            if found:
                rows.append([key.replace("_", " "), "", *[_cell(found.get(c), _digits(c)) for c, _ in columns], _cell(found["_row"]["params_m"], 2), _cell(found["_row"]["images_per_s"], 0)])
                break
    for record in records:
        found = metrics(record, "student")
        if found:
            label = f"{record.get('method', '?')}"
            rows.append([record.get("name", record.get("run_dir", "?")), label, *[_cell(found.get(c), _digits(c)) for c, _ in columns],
                         _cell(found["_row"]["params_m"], 2), _cell(found["_row"]["images_per_s"], 0)])
    return header, rows
