"""The quality benchmark harness: rows are resumable, tables come from the JSON files, the smoke check can fail."""

import json
import math

import pytest

from benchmarks.quality import rows, run, smoke, tables, tiers
from benchmarks.quality.__main__ import main
from benchmarks.quality.docs import replace_block
from benchmarks.quality.paths import row_path
from benchmarks.quality.records import time_to_quality


def _row(student, random_init=20.0, teacher=80.0, losses=(3.0, 2.5, 2.0), dcor2=(0.4, 0.05), **extra):
    aligned = lambda value: {"teacher_alignment": {"linear_cka": value, "dcor2": value, "samples": 500}}  # noqa: E731
    return {
        "created": "2026-11-24T10:00:00+00:00",
        "run_dir": "/nonexistent",
        "student": {"arch": "resnet18", "resolution": 32},
        "teacher": {"name": "cifar_resnet56"},
        "machine": {"cpus": 2, "gpu": None},
        "versions": {"torch": "2.x"},
        "knn": {
            "teacher": {"top1": teacher},
            "random_init": {"top1": random_init, **aligned(dcor2[1])},
            "student": {"top1": student, **aligned(dcor2[0])},
        },
        "timing": {"train_seconds": 90.0, "train_images_per_s": 250.0},
        "approximations": [],
        "epoch_losses": list(losses),
        **extra,
    }


def test_smoke_check_accepts_learning_and_names_each_failure():
    assert smoke.check_row("seed", _row(student=30.0)) == []
    [failure] = smoke.check_row("seed", _row(student=23.9))
    assert "23.9 % is not 4 points above random init 20.0 %" in failure
    assert smoke.check_row("bingo", _row(student=22.5, config={"method": {"warm_epochs": 0}})) == []  # its own margin
    assert smoke.check_row("mvmr_kd", _row(student=18.5)) == []  # its k-NN only must not fall by more than 2 points
    [failure] = smoke.check_row("mvmr_kd", _row(student=17.5))
    assert "17.5 % is not within 2 points of (or above) random init 20.0 %" in failure
    [failure] = smoke.check_row("disco", _row(student=30.0, dcor2=(0.09, 0.05)))
    assert "dCor² with the teacher 0.090 is not 0.05 above random init 0.050" in failure
    no_alignment = _row(student=30.0)
    del no_alignment["knn"]["student"]["teacher_alignment"]
    assert "no teacher alignment" in smoke.check_row("feature", no_alignment)[0]
    [failure] = smoke.check_row("feature", _row(student=30.0, losses=(2.0, 2.5)))
    assert "loss did not fall" in failure
    # a queue holds random keys in epoch 0 (an easier loss): queue methods compare the last epoch with epoch 1, BINGO's
    # official form with the first epoch after its intra-only warm-up
    assert smoke.check_row("seed", _row(student=30.0, losses=(2.0, 2.6, 2.5))) == []
    [failure] = smoke.check_row("disco", _row(student=30.0, losses=(2.0, 2.5, 2.6)))
    assert "loss did not fall (epoch 1 2.500 -> last 2.600)" in failure
    bingo = lambda losses, **method: _row(student=30.0, losses=losses, config={"method": {"name": "bingo", **method}})  # noqa: E731
    assert smoke.check_row("bingo", bingo((2.0, 2.1, 2.9, 2.8), warm_epochs=1)) == []  # epoch 2 (2.9) -> 2.8
    assert smoke.check_row("bingo", bingo((2.0, 2.1, 2.9, 2.8), warm_epochs=1, loss_form="paper")) != []  # epoch 1 (2.1)
    assert smoke.first_comparable_epoch("feature", _row(30.0)) == 0 and smoke.first_comparable_epoch("bingo", bingo((1, 1), warm_epochs=0)) == 1
    assert "not finite" in smoke.check_row("bingo", _row(student=30.0, losses=(2.0, math.nan)))[0]
    assert "missing" in smoke.check_row("disco", _row(student=30.0, losses=()))[0]
    # no-teacher rows: k-NN is not required to rise, MV-MR's loss must fall by 10 %
    assert smoke.check_row("moco", _row(student=18.0, losses=(5.0, 6.0))) == []
    assert smoke.check_row("mvmr_ssl", _row(student=18.0, losses=(4.0, 3.5))) == []
    [failure] = smoke.check_row("mvmr_ssl", _row(student=18.0, losses=(4.0, 3.8)))
    assert "less than 10%" in failure


def test_table_is_built_from_the_row_files(tmp_path):
    evaluation = {
        "models": {
            label: {"knn": {"k20_t0.07": {"top1": k20}, "k200_t0.1": {"top1": k20 - 1}}, "linear": {"top1": k20 + 1}}
            for label, k20 in (("teacher", 80.0), ("random_init", 20.0), ("student", 40.0))
        }
    }
    evaluation["models"]["student"]["teacher_alignment"] = {"linear_cka": 0.612, "dcor2": 0.5849, "samples": 2048}
    rows = {
        "feature": _row(40.0, evaluation=evaluation),
        "moco": _row(21.0, approximations=["something approximated"], deviations=["momentum: 0.99 (official: 0.999)"]),
    }
    for method, record in rows.items():
        path = row_path(tmp_path, "q2", method, "cpu")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    markdown = tables.table("q2", "cpu", tmp_path)
    lines = markdown.splitlines()
    assert "`python -m benchmarks.quality --tier cpu --bench q2`" in lines[0] and "2 CPU cores, no GPU" in lines[0]
    teacher, random_init, moco, feature = lines[4:8]
    assert teacher.startswith("| teacher (cifar_resnet56) | 80.0 | 79.0 | 81.0 | 100 | 100 |")
    assert random_init.startswith("| random-init student | 20.0 | 19.0 | 21.0 | 25 | 26 |")
    # 40 / 80 = 50 % of the teacher's k-NN, 41 / 81 = 51 % of its linear probe; 90 s of training at 250 img/s
    assert feature == "| feature regression | 40.0 | 39.0 | 41.0 | 50 | 51 | 0.61 | 0.58 | 90 s | 250 |  |"
    # a row without the full evaluation takes its teacher alignment from its k-NN record
    assert (
        moco
        == "| MoCo-v2 (no teacher) | 21.0 | – | – | 26 | – | 0.40 | 0.40 | 90 s | 250 | no teacher; something approximated; momentum: 0.99 (official: 0.999) |"
    )
    assert "no q1 rows" in tables.table("q1", "cpu", tmp_path).lower()


def test_a_row_that_trained_an_ema_copy_shows_it_as_a_second_row_under_its_student(tmp_path):
    evaluation = {
        "models": {
            label: {"knn": {"k20_t0.07": {"top1": k20}, "k200_t0.1": {"top1": k20 - 1}}, "linear": {"top1": k20 + 2}}
            for label, k20 in (("teacher", 80.0), ("random_init", 20.0), ("student", 44.0), ("student_ema", 40.0))
        }
    }
    record = _row(44.0, evaluation=evaluation, config={"trainer": {"ema_momentum": 0.999}})
    record["knn"]["student_ema"] = {"top1": 40.0}
    path = row_path(tmp_path, "q2", "rob_dino_kmeans", "cpu")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    lines = tables.table("q2", "cpu", tmp_path).splitlines()
    student, ema = lines[6:8]
    assert student.startswith("| RoB-DINO, k-means projection | 44.0 | 43.0 | 46.0 | 55 | 56 |")
    # 40 / 80 = 50 % of the teacher's k-NN, 42 / 82 = 51 % of its linear probe; no time of its own
    assert ema == (
        "| RoB-DINO, k-means projection: its EMA copy (momentum 0.999) | 40.0 | 39.0 | 42.0 | 50 | 51 | – | – | – | – | trained in the run above |"
    )
    assert len(lines) == 8  # a row without an EMA copy has no second row
    del record["knn"]["student_ema"], evaluation["models"]["student_ema"]
    path.write_text(json.dumps(record))
    assert len(tables.table("q2", "cpu", tmp_path).splitlines()) == 7


def test_teacher_alignment_is_filled_into_old_rows_from_the_features_their_run_kept(tmp_path, monkeypatch):
    import torch

    import ssdistill.api

    run_dir = tmp_path / "q1-feature"
    (run_dir / "features").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("method: {name: feature}\ndata: {train: tr, val: va}\nteacher: {name: efficientnet_lite0}\n")
    teacher = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    torch.save(2 * teacher, run_dir / "features" / "student-val-abc.pt")  # the teacher's geometry, rescaled
    torch.save(torch.randn(50, 4, generator=torch.Generator().manual_seed(1)), run_dir / "features" / "random_init-val-abc.pt")
    monkeypatch.setattr(ssdistill.api, "teacher_split_features", lambda cfg, spec: teacher if spec == "va" else None)
    record = {"run_dir": str(run_dir), "evaluation": {"models": {"teacher": {}, "student": {}, "random_init": {}}}}
    assert run.add_teacher_alignment(record)
    models = record["evaluation"]["models"]
    assert models["student"]["teacher_alignment"]["linear_cka"] == pytest.approx(1.0, abs=1e-5)
    assert models["random_init"]["teacher_alignment"]["dcor2"] < 0.5 and "teacher_alignment" not in models["teacher"]
    assert not run.add_teacher_alignment(record)  # nothing left to fill
    torch.save(teacher, run_dir / "features" / "student-val-def.pt")
    del models["student"]["teacher_alignment"]
    with pytest.raises(SystemExit, match="2 student val feature files"):
        run.add_teacher_alignment(record)


def test_mvmr_rows_name_their_representations_and_sign():
    kd = _row(30.0, config={"method": {"name": "mvmr", "mode": "kd"}})
    ssl = _row(25.0, config={"method": {"name": "mvmr", "mode": "ssl", "handcrafted_sign": "released"}})
    both = _row(31.0, config={"method": {"name": "mvmr", "mode": "kd", "representations": ["hog"]}})
    assert tables.notes("mvmr_kd", kd) == "representations: teacher"
    assert tables.notes("mvmr_ssl", ssl) == "no teacher; representations: raw, hog, local_std, released sign"
    assert tables.notes("mvmr_kd", both) == "representations: teacher, hog, paper sign"
    assert tables.notes("feature", _row(40.0, config={"method": {"name": "feature"}})) == ""


def test_readme_block_is_replaced_between_its_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:q1-cpu -->\nold table\n<!-- /bench:q1-cpu -->\nafter\n")
    replace_block(readme, "bench:q1-cpu", "| new |\n")
    assert readme.read_text() == "intro\n<!-- bench:q1-cpu -->\n| new |\n<!-- /bench:q1-cpu -->\nafter\n"
    with pytest.raises(SystemExit, match="no <!-- bench:q2-cpu --> ... <!-- /bench:q2-cpu --> block"):
        replace_block(readme, "bench:q2-cpu", "x")


def test_finished_rows_are_read_back_and_recomputed_only_when_forced(tmp_path, monkeypatch):
    calls = []

    def fake_distill(config=None, *, overrides=None, resume=None, quiet=False, **sections):
        calls.append((config, resume))
        run_dir = tmp_path / "runs" / overrides["run"]["name"]
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.csv").write_text("epoch,train/loss_epoch\n0,2.0\n1,1.5\n")
        record = _row(30.0, run_dir=str(run_dir))
        del record["epoch_losses"]  # as distill returns it: the harness reads the losses from metrics.csv
        return record

    monkeypatch.setattr("ssdistill.distill", fake_distill)
    monkeypatch.setitem(tiers.TIERS, "smoke", tiers.Tier("smoke", ("q2",), lambda bench, method: {"eval": {"suite": "knn"}}, "test"))
    args = dict(results_dir=tmp_path / "results", runs_dir=tmp_path / "runs")
    first = run.run_row("smoke", "q2", "feature", **args)
    assert len(calls) == 1 and first["epoch_losses"] == [2.0, 1.5]
    assert first["benchmark"]["command"] == "python -m benchmarks.quality --tier smoke --bench q2 --only feature"
    saved = json.loads(row_path(tmp_path / "results", "q2", "feature", "smoke").read_text())
    assert saved["knn"]["student"]["top1"] == 30.0
    (tmp_path / "runs" / "q2-feature-smoke" / "metrics.csv").unlink()  # its run directory is gone (a CI tmp dir)
    again = run.run_row("smoke", "q2", "feature", **args)
    assert len(calls) == 1  # finished row: read back
    assert again["epoch_losses"] == [2.0, 1.5]  # kept from the row file
    run.run_row("smoke", "q2", "feature", force=True, **args)
    assert len(calls) == 2  # --force: the run directory was deleted and the row measured again


def test_a_run_interrupted_after_a_checkpoint_is_resumed(tmp_path, monkeypatch):
    resumed = []
    run_dir = tmp_path / "runs" / "q2-seed-smoke"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"checkpoint")

    def fake_distill(config=None, *, overrides=None, resume=None, quiet=False, **sections):
        resumed.append(resume)
        return _row(30.0, run_dir=str(resume))

    monkeypatch.setattr("ssdistill.distill", fake_distill)
    monkeypatch.setitem(tiers.TIERS, "smoke", tiers.Tier("smoke", ("q2",), lambda b, m: {}, "test"))
    run.run_row("smoke", "q2", "seed", results_dir=tmp_path / "results", runs_dir=tmp_path / "runs")
    assert resumed == [run_dir]


def test_unknown_recipe_is_a_clear_error():
    with pytest.raises(SystemExit, match="no recipe configs/q2/nothing.yaml: benchmark q2 has no row for nothing"):
        rows.recipe_path("q2", "nothing")


def test_a_superseded_row_stands_in_marked_until_its_row_is_measured(tmp_path):
    old = row_path(tmp_path / "superseded", "q2", "seed", "cpu")
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps(_row(33.0, superseded="measured under older defaults", deviations=["mask_same_id: True (official: False)"])))
    current = row_path(tmp_path, "q2", "feature", "cpu")
    current.parent.mkdir(parents=True)
    current.write_text(json.dumps(_row(40.0)))
    lines = tables.table("q2", "cpu", tmp_path).splitlines()
    [seed] = [line for line in lines if line.startswith("| SEED")]
    assert seed.startswith("| SEED (superseded, see notes) | 33.0 |")
    assert seed.endswith("mask_same_id: True (official: False); superseded: measured under older defaults |")
    current = row_path(tmp_path, "q2", "seed", "cpu")
    current.write_text(json.dumps(_row(35.0)))
    [seed] = [line for line in tables.table("q2", "cpu", tmp_path).splitlines() if line.startswith("| SEED")]
    assert seed.startswith("| SEED | 35.0 |")  # the measured row replaces it


def _cohort_row(members, **extra):
    """A row of a two-member cohort: members = {label suffix: (k-NN, classifier top-1 or None, random-init k-NN)}."""
    knn = {"teacher": {"top1": 80.0}}
    for member, (k20, classifier, random_init) in members.items():
        suffix = "" if member == "student" else f"_{member}"
        knn[f"random_init{suffix}"] = {"top1": random_init}
        knn[f"student{suffix}"] = {"top1": k20, **({"classifier": {"top1": classifier}} if classifier is not None else {})}
    knn["student_ensemble"] = {"top1": max(v[0] for v in members.values()) + 1}
    students = {member: {"arch": "cifar_resnet20", "resolution": 32} for member in members}
    return _row(0.0, knn=knn, students=students, losses=(8.0, 3.0), **extra)


def test_rows_trained_with_labels_check_every_member_and_classifier():
    assert smoke.check_row("mcl_supervised", _cohort_row({"student": (35.0, 35.0, 19.0), "peer1": (33.0, 34.0, 18.0)})) == []
    failures = smoke.check_row("mcl_supervised", _cohort_row({"student": (35.0, 35.0, 19.0), "peer1": (20.0, 15.0, 18.0)}))
    assert failures == [
        "mcl_supervised: student_peer1 k-NN is 2.0 points above its random init, not 4.0",
        "mcl_supervised: student_peer1 classifier top-1 15.0 is not at least 20.0 %",
    ]
    assert "less than 10%" in smoke.check_row("mcl_independent", {**_cohort_row({"student": (35.0, 35.0, 19.0)}), "epoch_losses": [4.0, 3.9]})[0]


def test_cohort_rows_get_their_own_table_with_every_member(tmp_path):
    supervised = _cohort_row({"student": (35.2, 35.6, 19.0), "peer1": (32.6, 34.4, 18.2)}, deviations=[])
    path = row_path(tmp_path, "q2", "mcl_supervised", "cpu")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(supervised))
    lines = tables.cohort_table("q2", "cpu", tmp_path).splitlines()
    assert lines[4:7] == [
        "| MCL ×2, supervised (labels, no teacher) | student: cifar_resnet20 | 35.2 | – | – | 35.6 | 19.0 | 90 s | no teacher; trained with the class labels |",
        "|  | peer1: cifar_resnet20 | 32.6 | – | – | 34.4 | 18.2 |  |  |",
        "|  | ensemble (features concatenated) | 36.2 | – | – | – | – |  |  |",
    ]
    # a row trained with labels stays out of the label-free table (its random-init student is another architecture)
    assert "No q2 rows" in tables.table("q2", "cpu", tmp_path) and tables.cohort_table("q1", "cpu", tmp_path) is None


def _task_row(head=(40.0, 45.0), random_init=(30.0, 28.0), **extra):
    tasks = {
        name: {
            "teacher": teacher,
            "head": "kmeans",
            "classes": 5,
            "student_head": {"accuracy": h, "nmi": 10.0, "ari": 5.0},
            "student_kmeans": {"accuracy": h - 1, "nmi": 9.0, "ari": 4.0},
            "random_init_kmeans": {"accuracy": r, "nmi": 2.0, "ari": 1.0},
            "teacher_head": {"accuracy": 90.0, "nmi": 80.0, "ari": 70.0},
        }
        for name, teacher, h, r in zip(("a", "b"), ("r56", "r44"), head, random_init)
    }
    return _row(35.0, tasks=tasks, **extra)


def test_cka_rows_must_beat_the_random_init_student_on_every_task():
    from benchmarks.amalgamation import task_check

    assert task_check(_task_row(), 5.0) == []
    assert task_check(_task_row(head=(40.0, 30.0)), 5.0) == ["task b: student head ACC 30.0 % is not 5.0 points above random-init k-means 28.0 %"]
    assert task_check(_row(35.0), 5.0) == ["no per-task evaluation in the record"]
    assert smoke.check_row("cka", _task_row(head=(31.0, 45.0))) == [
        "cka: task a: student head ACC 31.0 % is not 5.0 points above random-init k-means 30.0 %"
    ]


def test_the_q3_table_shows_each_teacher_on_its_task_and_every_row_per_task(tmp_path):
    classifier = _task_row()
    for task in classifier["tasks"].values():
        task.update(head="classifier", teacher_head={"accuracy": 99.0, "nmi": 95.0, "ari": 97.0})
    for method, record in (("cka", _task_row()), ("cka_classifier", classifier), ("cka_task_only", _task_row(head=(35.0, 33.0)))):
        path = row_path(tmp_path, "q3c", method, "cpu")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
    lines = tables.task_table("q3c", "cpu", tmp_path).splitlines()
    assert "(a: r56, b: r44)" in lines[0] and "--bench q3c" in lines[0]
    assert lines[4].startswith("| teacher r56 (kmeans head), its own task a | – | – | 90.0 / 80.0 / 70.0 | – | – | – |")
    assert lines[6].startswith("| teacher r56 (classifier head), its own task a | – | – | 99.0 / 95.0 / 97.0 |")  # each head once
    assert lines[8] == "| random-init student | 20.0 | – | – | 30.0 | – | 28.0 | – |  |"
    assert lines[9] == "| CKA, every term (k-means task heads) | 35.0 | – | 40.0 / 10.0 / 5.0 | 39.0 | 45.0 / 10.0 / 5.0 | 44.0 | 90 s |  |"
    assert lines[11].startswith("| task KD only (L_task) | 35.0 | – | 35.0 / 10.0 / 5.0 | 34.0 |")


def test_the_recipe_table_gives_time_to_a_share_of_the_teacher_from_the_monitor(tmp_path):
    """The monitor's points come from metrics.csv and the epochs' training seconds; the time to 80 / 85 / 90 % of the
    teacher's k-NN is the training time at the first monitored epoch (student or EMA copy) that reached it; the recipe
    rows leave the method table for their own."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.csv").write_text(
        "epoch,step,train/loss_epoch,monitor/knn_top1,monitor/ema/knn_top1\n"
        "0,9,2.0,,\n1,19,1.5,60.0,58.0\n2,29,1.2,,\n3,39,1.0,66.0,69.0\n4,49,0.9,,\n5,59,0.8,71.0,70.0\n"
    )
    record = _row(71.0, teacher=80.0, timing={"train_seconds": 70.0, "epoch_train_seconds": [10.0, 10.0, 12.0, 12.0, 13.0, 13.0]})
    record["knn"]["student_ema"] = {"top1": 70.5}
    curve = run.monitor_curve(run_dir, record)
    assert curve == [
        {"epoch": 2, "train_seconds": 20.0, "student": 60.0, "ema": 58.0},
        {"epoch": 4, "train_seconds": 44.0, "student": 66.0, "ema": 69.0},
        {"epoch": 6, "train_seconds": 70.0, "student": 71.0, "ema": 70.0},
    ]
    record["monitor_knn"] = curve
    # 70 % of 80 = 56 and 75 % = 60 (epoch 2, 20 s); 80 % = 64 (epoch 4, 44 s); 85 % = 68 (epoch 4 by the EMA copy's
    # 69); 90 % = 72 never
    assert time_to_quality(record) == {0.70: 20.0, 0.75: 20.0, 0.80: 44.0, 0.85: 44.0, 0.90: None}
    for method, row in (("recipe_shared", _row(60.0)), ("recommended", record), ("feature", _row(60.0))):
        path = row_path(tmp_path, "q1", method, "cpu")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(row))
    lines = tables.recipe_table("q1", "cpu", tmp_path).splitlines()
    assert "--only recipe_shared recommended" in lines[0]
    assert lines[4].startswith("| shared recipe (feature regression), k-NN monitored | 60.0 |") and lines[4].count("| – / – / – / – / – |") == 1
    assert lines[5].startswith(
        "| recommended recipe: the row above with the student at 128 px (1.7x its FLOPs) | 71.0 | – | 89 | 70.5 | 70 s | 20 s / 20 s / 44 s / 44 s / – |"
    )
    method_rows = tables.table("q1", "cpu", tmp_path)
    assert "feature regression" in method_rows and "recommended recipe" not in method_rows and "k-NN monitored" not in method_rows
    assert tables.recipe_table("q2", "cpu", tmp_path) is None
    path = row_path(tmp_path, "q2", "recommended", "cpu")  # elsewhere the rows are the recipes, not Q1's steps
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    q2 = tables.recipe_table("q2", "cpu", tmp_path)
    assert "ingredients added" not in q2 and "| recommended recipe, unchanged from Q1: " in q2 and "128 px" not in q2


def test_another_seed_of_a_row_has_its_own_run_directory_and_command(tmp_path, monkeypatch):
    """--seed N: trainer.seed=N in a run directory of its own (a seed-0 run there must never be resumed as seed N), the
    command in the record says how to regenerate it, and the default results folder is refused (same file names)."""
    seen = []

    def fake_distill(config=None, *, overrides=None, resume=None, quiet=False, **sections):
        seen.append((overrides["run"]["name"], overrides["trainer"]["seed"], resume))
        run_dir = tmp_path / "runs" / overrides["run"]["name"]
        run_dir.mkdir(parents=True)
        return _row(30.0, run_dir=str(run_dir))

    monkeypatch.setattr("ssdistill.distill", fake_distill)
    monkeypatch.setitem(tiers.TIERS, "smoke", tiers.Tier("smoke", ("q2",), lambda b, m: {}, "test"))
    seed0 = tmp_path / "runs" / "q2-feature-smoke" / "checkpoints"
    seed0.mkdir(parents=True)
    (seed0 / "last.ckpt").write_bytes(b"seed 0's checkpoint")
    record = run.run_row("smoke", "q2", "feature", results_dir=tmp_path / "seeds", runs_dir=tmp_path / "runs", seed=1)
    assert seen == [("q2-feature-smoke-seed1", 1, None)]
    assert json.loads((tmp_path / "seeds" / "q2" / "feature-seed1-smoke.json").read_text())["knn"]["student"]["top1"] == 30.0
    run.run_row("smoke", "q2", "feature", results_dir=tmp_path / "seeds", runs_dir=tmp_path / "runs", seed=2)
    assert [name for name, *_ in seen] == ["q2-feature-smoke-seed1", "q2-feature-smoke-seed2"]  # seed 2 is not seed 1's row read back
    assert (
        record["benchmark"]["command"]
        == f"python -m benchmarks.quality --tier smoke --bench q2 --only feature --seed 1 --results {tmp_path / 'seeds'}"
    )
    with pytest.raises(SystemExit, match="a folder of their own"):
        main(["--tier", "smoke", "--bench", "q2", "--only", "feature", "--seed", "1"])


def test_a_run_of_another_config_is_not_read_back_under_a_rows_name(tmp_path):
    """train_or_resume refuses a run folder whose saved config differs from the row's (here: its epochs)."""
    import yaml

    from benchmarks.quality.run import same_config

    recipe = {"data": {"train": "x"}, "method": {"name": "feature"}, "trainer": {"epochs": 20}}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**recipe, "run": {"name": "elsewhere"}, "trainer": {"epochs": 20, "progress_bar": True}}))
    same_config(run_dir, recipe, {"run": {"name": "here"}, "trainer": {"progress_bar": False}})  # place and bar do not count
    with pytest.raises(SystemExit, match=r"trained with trainer.epochs=20 but this row asks for 30: move that run folder away"):
        same_config(run_dir, recipe, {"trainer": {"epochs": 30}})
    same_config(tmp_path / "no-run-yet", recipe, {})
