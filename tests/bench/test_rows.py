"""The benchmark rows as data (benchmarks/rows.yaml): every row builds the run it built when the rows were Python
constants, a row added to the file is measured, tabled and checked with no code change, and a bad entry is one line."""

import json
from pathlib import Path

import pytest
import yaml

from benchmarks.datasets import CIFAR10_ARCHIVE
from benchmarks.quality import rows, smoke, tables
from benchmarks.quality.__main__ import main
from benchmarks.quality.paths import REPO, ROWS_FILE, row_path
from benchmarks.quality.tiers import SMOKE_IMAGES, TIERS, run_dir_and_overrides

# written by the harness before the rows became data (git 373c305, benchmarks/quality.py): for every tier, benchmark
# and row (and another seed), the recipe, the run directory and the overrides, in order
SNAPSHOT = Path(__file__).with_name("row_configs.json")


def _slice_available() -> bool:
    folder = "cifar10-" + "-".join(f"{split}{n}" for split, n in sorted(SMOKE_IMAGES.items()))  # as cifar10_slice names it
    return CIFAR10_ARCHIVE.is_file() or (REPO / ".data" / "smoke" / folder).is_dir()


def test_every_row_builds_the_run_it_built_before_the_rows_became_data():
    expected = json.loads(SNAPSHOT.read_text())
    keys = [(t, bench, name, seed) for t in TIERS for bench in TIERS[t].benches for name in rows.catalogue().on(bench) for seed in (None, 1)]
    keys = [key for key in keys if "/".join(map(str, key[:3])) + ("" if key[3] is None else f"/seed{key[3]}") in expected]
    assert len(keys) == len(expected) == 238  # every row of then is a row of now (rows added since are not in the snapshot)
    if not _slice_available():
        keys = [key for key in keys if key[0] != "smoke"]  # the smoke tier's overrides name the CIFAR-10 slice's folders
    for tier, bench, name, seed in keys:
        run_dir, overrides = run_dir_and_overrides(TIERS[tier], bench, name, None, seed)  # every row builds (q3c feature_multi
        # on the smoke tier once did not: its entry was written when it trains on the slice's union of the tasks)
        got = {"recipe": str(rows.recipe_path(bench, name).relative_to(REPO)), "run_dir": str(run_dir), "overrides": overrides}
        text = json.dumps(got, ensure_ascii=False).replace(str(REPO), "$REPO").replace(str(REPO.parent), "$PARENT")
        key = f"{tier}/{bench}/{name}" + ("" if seed is None else f"/seed{seed}")
        assert text == json.dumps(expected[key], ensure_ascii=False), key  # key order too: the record keeps the overrides


def test_the_rows_without_a_teacher_are_those_whose_method_declares_no_teacher_need():
    catalogue = rows.catalogue()
    assert [n for n in catalogue.names if not catalogue.has_teacher(n)] == [
        "moco",
        "mcl",
        "mvmr_ssl",
        "mvmr_ssl_official",
        "mcl_independent",
        "mcl_supervised",
        "lmcl_supervised",
        "lmcl_supervised_hetero",
        "lmcl",
        "lmcl_supervised_nometa",
        "lmcl_supervised_matched",
        "mvmr_ssl_budget",
    ]
    from ssdistill.methods.registry import METHODS
    from ssdistill.recipe import build_config

    for name, row in catalogue.rows.items():  # a row is read from its first benchmark's recipe: the others agree
        for bench in row.benches:
            cfg = build_config(row.recipe_path(bench), row.overrides)
            assert bool(METHODS[cfg.method.name].teacher_needs(cfg)) == catalogue.has_teacher(name), (name, bench)
    assert sorted(rows.WITH_LABELS) == [
        "lmcl_supervised",
        "lmcl_supervised_hetero",
        "lmcl_supervised_matched",
        "lmcl_supervised_nometa",
        "mcl_independent",
        "mcl_supervised",
    ]
    assert catalogue.in_group("cohort") == (
        "mcl",
        "mcl_independent",
        "mcl_supervised",
        "lmcl_supervised",
        "lmcl_supervised_hetero",
        "lmcl",
        "lmcl_supervised_nometa",
        "lmcl_supervised_matched",
    )
    assert catalogue.label("recommended", "q1") != catalogue.label("recommended", "q2")  # Q1's ablation step, Q2's recipe


def test_every_smoke_row_is_tested_or_its_omission_explained():
    grouped = [row for pairs in smoke.smoke_tests().values() for row in pairs]
    assert sorted(grouped + list(smoke.smoke_untested())) == sorted(smoke.smoke_rows()) and len(set(grouped)) == len(grouped)
    assert smoke.smoke_tests() == {
        "a": (("q2", "feature"), ("q2", "seed"), ("q2", "disco"), ("q3c", "cka")),
        "b": (("q2", "bingo"), ("q2", "mvmr_kd"), ("q2", "mcl_supervised")),
    }


NEW_ROW = """
  feature_mse:
    benches: [q2]
    label: feature regression, MSE loss
    group: ablation
    recipe: configs/{bench}/feature.yaml
    overrides: {method: {loss: mse}}
    smoke: {untested: a test of the catalogue}
"""


def test_a_row_added_to_the_file_is_run_tabled_and_checked_without_code_changes(tmp_path, monkeypatch):
    copy = tmp_path / "rows.yaml"
    copy.write_text(ROWS_FILE.read_text() + NEW_ROW)
    monkeypatch.setattr(rows, "CATALOGUE", rows.load(copy))
    assert rows.catalogue().on("q2")[-1] == "feature_mse" and "feature_mse" not in rows.load(ROWS_FILE).names
    run_dir, overrides = run_dir_and_overrides(TIERS["cpu"], "q2", "feature_mse", tmp_path / "runs")
    assert run_dir == tmp_path / "runs" / "q2-feature_mse"  # its own run, not the feature row's q2-feature
    assert overrides["method"] == {"loss": "mse"} and rows.recipe_path("q2", "feature_mse") == REPO / "configs/q2/feature.yaml"
    assert smoke.smoke_untested()[("q2", "feature_mse")] == "a test of the catalogue"
    assert smoke.check_row("feature_mse", _record(student=21.0)) == ["feature_mse: student k-NN 21.0 % is not 4 points above random init 20.0 %"]
    path = row_path(tmp_path / "results", "q2", "feature_mse", "cpu")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(_record(student=40.0)))
    assert main(["--tier", "cpu", "--bench", "q2", "--only", "feature_mse", "--table-only", "--results", str(tmp_path / "results")]) == 0
    [line] = [line for line in tables.table("q2", "cpu", tmp_path / "results").splitlines() if "MSE" in line]
    assert line.startswith("| feature regression, MSE loss | 40.0 |")
    assert (tmp_path / "results" / "q2-cpu.md").read_text().count("feature regression, MSE loss") == 1


def _record(student: float) -> dict:
    aligned = lambda value: {"teacher_alignment": {"linear_cka": value, "dcor2": value, "samples": 500}}  # noqa: E731
    return {
        "created": "2026-12-07T10:00:00+00:00",
        "run_dir": "/nonexistent",
        "student": {"arch": "resnet18", "resolution": 32},
        "teacher": {"name": "cifar_resnet56"},
        "knn": {"teacher": {"top1": 80.0}, "random_init": {"top1": 20.0, **aligned(0.1)}, "student": {"top1": student, **aligned(0.5)}},
        "epoch_losses": [2.0, 1.0],
        "config": {"method": {"name": "feature", "loss": "mse"}},
    }


CHECKS = "smoke_checks: {knn_margin: 4.0, dcor2_margin: 0.05, loss_drop: 0.1, classifier_min: 20.0, task_margin: 5.0}\n"
GOOD = {"benches": ["q2"], "label": "x", "group": "baseline", "recipe": "configs/q2/feature.yaml", "smoke": {"test": "a"}}


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"lable": "y"},
            (
                "rows.yaml: row 'x' has an unknown key 'lable' (did you mean 'label'?); its keys are benches, label, group, "
                "recipe, overrides, tiers, labels, bench_labels, notes, smoke"
            ),
        ),
        ({"group": "baselines"}, "rows.yaml: row 'x' has group 'baselines', not one of baseline, published, ablation, recipe, cohort, task"),
        ({"recipe": None}, "rows.yaml: row 'x' on q2: no recipe configs/q2/x.yaml; write it, or set the row's recipe"),
        ({"benches": ["q4"]}, "rows.yaml: row 'x' lists benchmark 'q4', not one of q1, q2, q3, q3c"),
        ({"label": None}, "rows.yaml: row 'x' has no 'label' (every row needs benches, label, group)"),
        ({"smoke": {}}, "rows.yaml: row 'x' runs on the smoke tier (q2): give it smoke: {test: a} (or b), or smoke: {untested: <why>}, not neither"),
        ({"smoke": {"test": "c"}}, "rows.yaml: row 'x': smoke test 'c' is not one of a, b"),
        ({"smoke": {"test": "a", "margin": 2}}, "rows.yaml: row 'x': smoke has an unknown key 'margin'"),
        ({"notes": ["terms"]}, "rows.yaml: row 'x' names note hook 'terms', not one of mvmr_representations (benchmarks/quality/hooks.py)"),
        ({"tiers": {"tpu": {}}}, "rows.yaml: row 'x' has overrides for tier 'tpu', not one of smoke, cpu, gpu"),
    ],
)
def test_a_bad_entry_is_one_line_naming_the_row_and_what_to_change(tmp_path, change, message):
    entry = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    path = tmp_path / "rows.yaml"
    path.write_text(CHECKS + yaml.safe_dump({"rows": {"x": entry}}))
    with pytest.raises(SystemExit) as raised:
        rows.load(path)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
    path.write_text(CHECKS + yaml.safe_dump({"rows": {"x": GOOD}}))
    assert rows.load(path).names == ("x",)
