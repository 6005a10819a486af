"""The smoke tier's oracles: which rows the tests run (``smoke_tests``: test_smoke_tier.py runs group a,
test_smoke_tier_b.py group b) or leave out and why (``smoke_untested``), and the learning check of a row's record
(``check_row``). The thresholds and the evidence for them are in benchmarks/rows.yaml (``smoke_checks``, each row's
``smoke``); tests/bench imports only this module."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.quality import hooks, rows
from benchmarks.quality.paths import SHARED_WEIGHTS  # noqa: F401  (the smoke tests look for the teacher's weights there)


def smoke_tests() -> dict[str, tuple[tuple[str, str], ...]]:
    return rows.catalogue().smoke_tests()


def smoke_untested() -> dict[tuple[str, str], str]:
    return rows.catalogue().smoke_untested()


def smoke_rows() -> list[tuple[str, str]]:
    """(bench, row) of every row of the smoke tier."""
    return rows.catalogue().smoke_rows()


def has_teacher(method: str) -> bool:
    return rows.catalogue().has_teacher(method)


def run_rows(pairs, root: Path) -> dict[tuple[str, str], dict]:
    """Run (bench, row) pairs on the smoke tier, records and runs under ``root``."""
    from benchmarks.quality.run import run_tier

    done = {}
    for bench, method in pairs:
        done.update(run_tier("smoke", [bench], [method], results_dir=Path(root) / "results", runs_dir=Path(root) / "runs", log=lambda line: None))
    return done


def first_comparable_epoch(method: str, record: dict) -> int:
    """The epoch whose mean loss the last epoch's is compared with (a row's smoke ``loss_from_epoch``, default 0). A
    queue starts as random unit keys (easy negatives) and holds real keys only from epoch 1 on (it is capped at the
    dataset size, so one epoch fills it): earlier epochs optimise an easier loss, not the same one."""
    row = rows.catalogue().rows.get(method)
    start = (row.smoke if row else {}).get("loss_from_epoch", 0)
    if isinstance(start, str):
        return hooks.EPOCHS[start]((record.get("config") or {}).get("method") or {})
    return start


def check_row(method: str, record: dict) -> list[str]:
    """Smoke-tier learning check of one row: what failed (empty when it passed)."""
    catalogue = rows.catalogue()
    checks, row = catalogue.checks, catalogue.rows.get(method)
    if row is None:
        return [f"{method}: not a row of benchmarks/rows.yaml, so it has no smoke check"]
    losses = record.get("epoch_losses") or []
    if not losses or not all(math.isfinite(loss) for loss in losses):
        return [f"{method}: losses missing or not finite: {losses}"]
    start = min(first_comparable_epoch(method, record), len(losses) - 1)
    knn = record.get("knn") or {}
    if "student" not in knn or "random_init" not in knn:
        return [f"{method}: no k-NN of the student next to the random-init student"]
    student, random_init = knn["student"]["top1"], knn["random_init"]["top1"]
    failures = []
    if catalogue.has_teacher(method):
        margin = catalogue.knn_margin(method)
        if not student >= random_init + margin:
            wanted = f"{margin:g} points above" if margin > 0 else f"within {-margin:g} points of (or above)"
            failures.append(f"{method}: student k-NN {student:.1f} % is not {wanted} random init {random_init:.1f} %")
        alignment = [knn[label].get("teacher_alignment", {}).get("dcor2") for label in ("student", "random_init")]
        if None in alignment:
            failures.append(f"{method}: no teacher alignment of the student and the random-init student (evaluate the teacher)")
        elif not alignment[0] >= alignment[1] + checks["dcor2_margin"]:
            failures.append(
                f"{method}: student dCor² with the teacher {alignment[0]:.3f} is not {checks['dcor2_margin']:g} above random init {alignment[1]:.3f}"
            )
        if not losses[-1] < losses[start]:
            failures.append(f"{method}: loss did not fall (epoch {start} {losses[start]:.3f} -> last {losses[-1]:.3f})")
    if row.group == "task":  # every task: the student's head clusters it better than the random-init student
        from benchmarks.amalgamation import task_check

        failures += [f"{method}: {failure}" for failure in task_check(record, checks["task_margin"])]
    if row.labels:  # trained with labels: every member must learn, and its classifier must beat chance
        for member in (label for label in knn if label.startswith("student") and label != "student_ensemble"):
            lift = knn[member]["top1"] - knn[member.replace("student", "random_init", 1)]["top1"]
            if not lift >= checks["knn_margin"]:
                failures.append(f"{method}: {member} k-NN is {lift:.1f} points above its random init, not {checks['knn_margin']}")
            classifier = (knn[member].get("classifier") or {}).get("top1")
            if classifier is None or not classifier >= checks["classifier_min"]:
                failures.append(f"{method}: {member} classifier top-1 {classifier} is not at least {checks['classifier_min']} %")
    if row.smoke.get("loss_drop") and not losses[-1] <= (1 - checks["loss_drop"]) * losses[0]:
        failures.append(f"{method}: loss fell from {losses[0]:.3f} to {losses[-1]:.3f}, less than {checks['loss_drop']:.0%}")
    return failures
