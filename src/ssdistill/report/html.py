"""``ssdistill report RUN_DIR [RUN_DIR ...]``: one self-contained HTML page (inline SVG, no server, nothing fetched)
with the results table, loss and learning-rate curves, every monitor the run logged during training (the label-free
alignment with the teacher, k-NN, any other ``monitor/*`` column of metrics.csv; a curve per member of a cohort), a
2-D map of student and teacher features coloured by class, and the resolved config; several runs give a comparison
table and overlaid curves. Also a markdown table for READMEs. docs/report.md describes the page."""

from __future__ import annotations

import csv
import json
import logging
import math
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from ssdistill.engine.records import RESULTS_VERSION
from ssdistill.engine.rundir import busy, existing_run_dir
from ssdistill.errors import ConfigError
from ssdistill.eval.classes import class_note
from ssdistill.eval.tables import comparison_rows, markdown_table, model_group, model_identities, model_keys, model_names, model_rows, task_rows
from ssdistill.files import atomic_write_text
from ssdistill.labels import is_primary
from ssdistill.report.svg import line_chart, scatter_chart

log = logging.getLogger("ssdistill")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; padding: 0 16px; max-width: 1180px; color: #222; }
.table { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0 20px; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 460px), 1fr)); gap: 16px; align-items: start; }
.charts svg.chart { display: block; width: 100%; max-width: 560px; height: auto; }
pre { background: #f7f7f7; padding: 10px; overflow-x: auto; font-size: 12px; }
.note { color: #666; font-size: 13px; }
@media (max-width: 600px) { body { margin: 8px auto; padding: 0 8px; } h1 { font-size: 1.5em; } }
"""

# Marks every chart with the size it was drawn at, so a headless browser can confirm the plots rendered.
RENDER_CHECK = """
window.addEventListener('load', () => {
  const charts = [...document.querySelectorAll('svg.chart')].map(svg => {
    const box = svg.getBoundingClientRect();
    const drawn = [...svg.querySelectorAll('.series')].filter(el => { const b = el.getBBox(); return b.width > 0 || b.height > 0; });
    return {id: svg.id, width: Math.round(box.width), height: Math.round(box.height), series: drawn.length};
  });
  document.body.setAttribute('data-rendered', JSON.stringify(charts));
});
"""


def _number(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan


def read_record(path: Path, remedy: str) -> dict:
    """A run's JSON record; a damaged one (cut short by a full disk, edited by hand) is one line naming the file."""
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is damaged (not valid JSON: {str(exc).splitlines()[0]}); {remedy}") from None
    if not isinstance(record, dict) or "knn" not in record:
        raise ConfigError(f"{path} is not a run record (no 'knn' entry); {remedy}")
    return record


def current_results(results: dict) -> bool:
    """Whether a results.json is in this ssdistill's format (an older one lacks what the report and export read)."""
    return results.get("results_version", 1) >= RESULTS_VERSION and isinstance(results.get("data"), dict) and "method" in results


def load_run(path: str | Path) -> dict:
    """A run's results, full evaluation (evaluation.json, else the one made after training), metrics and config."""
    run = existing_run_dir(path)
    results_path = run / "results.json"
    held = busy(run)
    if not results_path.is_file():
        if held:
            raise ConfigError(f"{held}: its report can be made once it has finished")
        raise ConfigError(f"{run} has no results.json: the run has not finished (resume it with `ssdistill distill --resume {run}`)")
    if held:
        log.warning("%s: the report shows its results.json from before this training", held)
    results = read_record(results_path, f"evaluate the run again with `ssdistill eval {run}`, or resume it with `ssdistill distill --resume {run}`")
    if not current_results(results):
        raise ConfigError(
            f"{results_path} was written by an older ssdistill (results_version {results.get('results_version', 1)}, this one "
            f"reads {RESULTS_VERSION}), which lacks what the report shows: make its report with the ssdistill that trained it, or "
            f"train the run again"
        )
    record = {"knn": results.get("knn"), "evaluation": results.get("evaluation"), "data": results["data"]}
    if (run / "evaluation.json").is_file():
        evaluated = read_record(run / "evaluation.json", f"remove it, or evaluate the run again with `ssdistill eval {run}`")
        step = evaluated.get("step")  # the checkpoint evaluated (a record without it is from before steps were recorded)
        if step is not None and step != results.get("steps"):
            log.warning(
                "%s evaluated the checkpoint of step %s, not the final one (step %s): the report shows results.json's "
                "evaluation; `ssdistill eval %s` renews it",
                run / "evaluation.json",
                step,
                results.get("steps"),
                run,
            )
        else:
            record.update(knn=evaluated["knn"], evaluation=evaluated.get("evaluation") or record["evaluation"])
    metrics_path = run / "metrics.csv"
    metrics = list(csv.DictReader(metrics_path.open())) if metrics_path.is_file() else []
    return {
        "name": run.name,
        "dir": run,
        "method": results["method"],
        "results": results,
        "record": {
            **record,
            "method": results["method"],
            "name": run.name,
            "run_dir": str(run),
            "names": model_names(results),
            "identities": model_identities(results),
        },
        "metrics": metrics,
        "config": (run / "config.yaml").read_text(),
    }


def _series(metrics: list[dict], x_key: str, y_key: str) -> tuple[list[float], list[float]]:
    points = [(_number(r.get(x_key)), _number(r.get(y_key))) for r in metrics if r.get(y_key) not in (None, "")]
    return [p[0] for p in points], [p[1] for p in points]


def _per_epoch(metrics: list[dict], y_key: str) -> tuple[list[float], list[float]]:
    """A value logged once an epoch against the epochs trained when it was logged (metrics.csv's epoch counts from 0)."""
    xs, ys = _series(metrics, "epoch", y_key)
    return [x + 1 for x in xs], ys


def _class_names(results: dict) -> list[str] | None:
    """The class names of the evaluation's label ids: the memory's, as the evaluation matched them (older records: the
    val folder's sub-folders)."""
    names = ((results.get("data") or {}).get("classes") or {}).get("names")
    if names:
        return list(names)
    val = results.get("data", {}).get("val")
    folder = Path(val) if val else None
    if folder and folder.is_dir():
        names = sorted(p.name for p in folder.iterdir() if p.is_dir())
        return names or None
    return None


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<div class='table'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _run_charts(run: dict) -> list[str]:
    metrics, name = run["metrics"], run["name"]
    steps = _series(metrics, "step", "train/loss_step")
    if len(steps[0]) >= 2:
        charts = [line_chart([("loss", *steps)], f"training loss ({name})", "step", "loss", f"loss-{name}")]
    else:  # short runs log no step values (trainer.log_every_n_steps): per-epoch means instead
        charts = [
            line_chart([("loss", *_per_epoch(metrics, "train/loss_epoch"))], f"training loss ({name})", "epochs trained", "loss", f"loss-{name}")
        ]
    terms = sorted({k[len("train/") : -len("_epoch")] for r in metrics[:1] for k in r if k.startswith("train/") and k.endswith("_epoch")} - {"loss"})
    if terms:
        series = [(term, *_per_epoch(metrics, f"train/{term}_epoch")) for term in terms]
        charts.append(line_chart(series, f"loss terms per epoch ({name})", "epochs trained", "value", f"terms-{name}"))
    charts.append(line_chart([("lr", *_series(metrics, "step", "train/lr"))], f"learning rate ({name})", "step", "lr", f"lr-{name}"))
    for metric, curves in monitor_series(run).items():  # every monitor the run logged, a curve per member
        title, _, chart_id = _monitor_names(metric)
        charts.append(_monitor_chart(metric, curves, f"{title} ({name})", f"{chart_id}-{name}", baselines=True))
    return charts


# how the report names the monitors it knows: metric -> (chart title, y label, chart id); any other monitor/* column
# is plotted too, under its own name
MONITORS = {
    "teacher_cka": ("linear CKA with the teacher (no labels)", "CKA", "monitor-teacher-cka"),
    "knn_top1": ("k-NN top-1 during training", "top-1 %", "knn"),
    "knn_top5": ("k-NN top-5 during training", "top-5 %", "knn-top5"),
}
START = "_start"  # a monitor's value before the first step (``<metric>_start``): the epoch-0 point of its curve


def _monitor_names(metric: str) -> tuple[str, str, str]:
    slug = "".join(c if c.isalnum() else "-" for c in metric.lower())
    return MONITORS.get(metric, (f"monitor {metric}", metric, f"monitor-{slug}"))


def monitor_series(run: dict) -> dict[str, dict[str, dict]]:
    """Every monitor a run logged (any ``monitor/*`` column of metrics.csv), as metric -> member -> curve, in the order
    of MONITORS then by name, members in the run's order. ``monitor/<metric>`` is the student's, ``monitor/<member>/<metric>``
    a cohort member's. A curve is {"x", "y", "xlabel", "start"}: x counts the epochs trained (a value logged more than
    once an epoch: the step), and ``<metric>_start``, logged once before training, is the point at 0 (``start``)."""
    metrics = run["metrics"]
    members = list(run["results"].get("students") or ["student"])
    columns: dict[str, dict[str, str]] = {}
    for column in metrics[0] if metrics else []:
        if not column.startswith("monitor/"):
            continue
        parts = column.split("/")[1:]
        member, metric = (parts[0], "/".join(parts[1:])) if len(parts) > 1 and parts[0] in members else ("student", "/".join(parts))
        columns.setdefault(metric, {})[member] = column
    found: dict[str, dict[str, dict]] = {}
    for metric, by_member in columns.items():
        if metric.endswith(START) and metric[: -len(START)] in columns:
            continue
        for member, column in by_member.items():
            rows = [r for r in metrics if r.get(column) not in (None, "")]
            if not rows:
                continue
            epochs = [int(_number(r.get("epoch"))) if math.isfinite(_number(r.get("epoch"))) else -1 for r in rows]
            by_step = len(set(epochs)) < len(epochs) or -1 in epochs
            xs = [_number(r.get("step")) if by_step else e + 1.0 for r, e in zip(rows, epochs)]
            start_column = columns.get(metric + START, {}).get(member)
            start = next((_number(r[start_column]) for r in metrics if start_column and r.get(start_column) not in (None, "")), None)
            curve = {"x": xs, "y": [_number(r[column]) for r in rows], "xlabel": "step" if by_step else "epochs trained", "start": start}
            if start is not None and math.isfinite(start):
                curve["x"], curve["y"] = [0.0, *curve["x"]], [start, *curve["y"]]
            found.setdefault(metric, {})[member] = curve

    def rank(name: str, order: list[str]) -> tuple[int, str]:
        return order.index(name) if name in order else len(order), name

    return {
        metric: {member: found[metric][member] for member in sorted(found[metric], key=lambda m: rank(m, members))}
        for metric in sorted(found, key=lambda m: rank(m, list(MONITORS)))
    }


def _monitor_chart(metric: str, curves: dict[str, dict], title: str, chart_id: str, baselines: bool) -> str:
    """One monitor's chart: a curve per member (or run), and with ``baselines`` each curve's start as a dashed line."""
    _, ylabel, _ = _monitor_names(metric)
    xlabels = {curve["xlabel"] for curve in curves.values()}
    series = [(name, curve["x"], curve["y"]) for name, curve in curves.items()]
    starts = [(name, curve["start"]) for name, curve in curves.items() if baselines and curve["start"] is not None]
    return line_chart(series, title, xlabels.pop() if len(xlabels) == 1 else "epochs trained / step", ylabel, chart_id, baselines=starts)


def _embedding_charts(runs: list[dict]) -> list[str]:
    charts, teachers_drawn = [], set()
    for run in runs:
        evaluation = run["record"].get("evaluation") or {}
        models = evaluation.get("models", {})
        classes = _class_names(run["results"])
        display, identities = run["record"]["names"], run["record"]["identities"]
        for key in model_keys(models):
            embedding = models[key].get("embedding") if models[key] else None
            is_teacher = model_group(key) == "teacher"
            if embedding is None or model_group(key) not in ("teacher", "student"):
                continue
            if is_teacher:  # a teacher shared by several runs (same fingerprint) is drawn once
                if identities.get(key, display.get(key, key)) in teachers_drawn:
                    continue
                teachers_drawn.add(identities.get(key, display.get(key, key)))
            title = display.get(key, key) if is_teacher else f"{display.get(key, key)} ({run['name']})"
            charts.append(
                scatter_chart(
                    embedding["x"], embedding["y"], embedding["label"], f"{title}: 2-D PCA of val features", f"map-{key}-{run['name']}", classes
                )
            )
    return charts


def build_report(run_dirs: list[str | Path], output: str | Path | None = None) -> Path:
    """Write the HTML report (default: RUN/report.html for one run, ./report.html for several); returns its path."""
    if not run_dirs:
        raise ConfigError("ssdistill report needs at least one run directory")
    runs = [load_run(r) for r in run_dirs]
    if len(runs) == 1:
        header, rows = model_rows(runs[0]["record"], model_names(runs[0]["results"]))
        title = f"ssdistill report: {runs[0]['name']}"
    else:
        header, rows = comparison_rows([r["record"] for r in runs])
        title = f"ssdistill report: {len(runs)} runs"
    sections = [f"<h1>{escape(title)}</h1>", f'<p class="note">written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</p>']
    first = runs[0]["results"]
    protocol = first["protocol"]["knn"]
    sections.append("<h2>Results</h2>" + html_table(header, rows))
    sections.append(
        f'<p class="note">Evaluated on {escape(str(first["data"]["val"]))}; k-NN memory {escape(str(first["data"]["knn_train"]))}; '
        f"weighted k-NN k={protocol['k']}, T={protocol['temperature']} unless the column says otherwise; linear and few-shot probes "
        "choose their L2 strength on a held-out part of train, never on the evaluation split.</p>"
    )
    for run in runs:
        if note := class_note((run["results"].get("data") or {}).get("classes")):
            sections.append(f'<p class="note">{escape(run["name"])}: classes matched by name: {escape(note)}.</p>')
    for run in runs:
        if (tasks := task_rows(run["results"])) is not None:
            sections.append(f"<h2>Tasks: {escape(run['name'])}</h2>" + html_table(*tasks))
    if len(runs) > 1:
        losses = [(r["name"], *_per_epoch(r["metrics"], "train/loss_epoch")) for r in runs]
        overlaid = [line_chart(losses, "training loss per epoch", "epochs trained", "loss", "loss-all")]
        per_run = [(r, monitor_series(r)) for r in runs]
        for metric in dict.fromkeys(m for _, found in per_run for m in found):  # each monitor, every run's members overlaid
            curves = {
                (r["name"] if is_primary(member) else f"{r['name']} [{member}]"): curve
                for r, found in per_run
                for member, curve in found.get(metric, {}).items()
            }
            title, _, chart_id = _monitor_names(metric)
            overlaid.append(_monitor_chart(metric, curves, title, f"{chart_id}-all", baselines=False))
        sections.append("<h2>Curves</h2><div class='charts'>" + "".join(c for c in overlaid if c) + "</div>")
    for run in runs:
        charts = [c for c in _run_charts(run) if c]
        if charts:
            sections.append(f"<h2>Training: {escape(run['name'])}</h2><div class='charts'>" + "".join(charts) + "</div>")
    maps = [c for c in _embedding_charts(runs) if c]
    if maps:
        sections.append("<h2>Feature maps</h2><div class='charts'>" + "".join(maps) + "</div>")
    else:
        sections.append('<p class="note">No feature maps: run <code>ssdistill eval RUN</code> first for the full evaluation.</p>')
    for run in runs:
        notes = []
        for label, key in (("Deviations from the official code", "deviations"), ("Approximations", "approximations")):
            if items := run["results"].get(key) or []:
                notes.append(f"<p class='note'>{label}: {escape('; '.join(items))}</p>")
        sections.append(f"<h2>Config: {escape(run['name'])}</h2>{''.join(notes)}<pre>{escape(run['config'])}</pre>")
    page = (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><meta name='viewport' content='width=device-width, initial-scale=1'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style><script>{RENDER_CHECK}</script></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    path = Path(output) if output else (runs[0]["dir"] / "report.html" if len(runs) == 1 else Path("report.html"))
    atomic_write_text(path, page)
    return path


def markdown_report(run_dirs: list[str | Path]) -> str:
    runs = [load_run(r) for r in run_dirs]
    if len(runs) == 1:
        text = markdown_table(*model_rows(runs[0]["record"], model_names(runs[0]["results"])))
    else:
        text = markdown_table(*comparison_rows([r["record"] for r in runs]))
    for run in runs:
        if (tasks := task_rows(run["results"])) is not None:
            text += f"\nTasks of {run['name']}:\n\n" + markdown_table(*tasks)
    return text
