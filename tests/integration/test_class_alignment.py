"""Class sets of the memory and evaluation splits through the real CLI (issue: misaligned classes gave silently wrong
numbers): a refused case exits 2 with one line and leaves no run directory; a case evaluated by name gives exactly the
figures of a by-hand alignment."""

import json

import pytest
import torch
import yaml

from ssdistill.cli import main

from conftest import DEMO_DATA
from integration.common import tiny_config

CLASSES = sorted(p.name for p in (DEMO_DATA / "val").iterdir() if p.is_dir())


def _folder(root, classes, split="val", renamed=None):
    """A split of symlinked demo class folders: ``classes`` by their own names, ``renamed`` {new name: demo class}."""
    root.mkdir(parents=True, exist_ok=True)
    for name in classes:
        (root / name).symlink_to(DEMO_DATA / split / name)
    for new, old in (renamed or {}).items():
        (root / new).symlink_to(DEMO_DATA / split / old)
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    t = tmp_path_factory.mktemp("classes")
    config = tiny_config(t, trainer={"epochs": 1}, eval={"teacher": True}, cache={"dir": str(t / "cache")})
    (t / "recipe.yaml").write_text(yaml.safe_dump(config))
    _folder(t / "val_missing_first", CLASSES[1:])
    _folder(t / "val_extra", CLASSES, renamed={"zz_extra": CLASSES[0]})
    _folder(t / "val_renamed", CLASSES[1:], renamed={"tench": CLASSES[0]})
    _folder(t / "one_class", CLASSES[:1], split="train")
    _folder(t / "empty_class", CLASSES[1:], split="train")
    (t / "empty_class" / CLASSES[0]).mkdir()  # a class folder with no image left in it
    return t


def _run(argv, capsys):
    with pytest.raises(SystemExit) as code:
        main(argv)
    return code.value.code, [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


REFUSED = [  # (case, overrides, message fragment)
    ("val with an extra class", ["data.val={t}/val_extra"], "has class 'zz_extra' that the k-NN memory data.train"),
    (
        "renamed class",
        ["data.val={t}/val_renamed"],
        f"class 'tench' that the k-NN memory data.train ({DEMO_DATA}/train) does not have (its classes not in data.val ({{t}}/val_renamed): '{CLASSES[0]}')",
    ),
    ("one-class train", ["data.train={t}/one_class"], f"has only one class ('{CLASSES[0]}')"),
    ("val equal to train", [f"data.val={DEMO_DATA}/train", "data.train_subset=null"], "holds the same images as the k-NN memory"),
    (
        "train with an empty class folder",
        ["data.train={t}/empty_class", "data.train_subset=null"],
        f"data.val ({DEMO_DATA}/val) has class '{CLASSES[0]}' of which the k-NN memory data.train ({{t}}/empty_class) has no image",
    ),
]


@pytest.mark.parametrize("case, overrides, fragment", REFUSED, ids=[c for c, _, _ in REFUSED])
def test_a_class_mismatch_is_refused_before_training(workdir, capsys, case, overrides, fragment):
    t = str(workdir)
    code, errors = _run(["distill", "--config", f"{t}/recipe.yaml", *[o.format(t=t) for o in overrides]], capsys)
    assert code == 2 and len(errors) == 1 and fragment.format(t=t) in errors[0], errors
    assert not (workdir / "runs").exists() or not any((workdir / "runs").iterdir())


def _by_hand(run_dir, val):
    """k-NN top-1 of the run's student and teacher with the query labels mapped to the memory's by class name, by hand."""
    from ssdistill.data.datasets import open_images, seeded_subset
    from ssdistill.data.views import original_view
    from ssdistill.eval.features import extract_features
    from ssdistill.eval.knn import knn_accuracy
    from ssdistill.models.teachers import build_teacher
    from ssdistill.runs.load import load_student_from_run

    cfg, student = load_student_from_run(run_dir)
    memory = seeded_subset(open_images(cfg.data.train), cfg.data.train_subset, cfg.trainer.seed)
    query = open_images(val)
    memory_labels = torch.tensor(memory.labels)
    query_labels = torch.tensor([memory.classes.index(query.classes[label]) for label in query.labels])
    teacher = build_teacher(cfg.teacher.model_copy(update={"output": "pooled"}))
    scores = {}
    for label, model, view in (("student", student.eval(), original_view(cfg.student.resolution)), ("teacher", teacher, teacher.original_view())):
        bank, queries = (extract_features(model, split, view, 64, 0, "cpu") for split in (memory, query))
        scores[label] = knn_accuracy(bank, memory_labels, queries, query_labels, cfg.eval.knn_k, cfg.eval.knn_t)["top1"]
    return scores


def test_val_missing_a_class_is_scored_by_name(workdir, capsys):
    """The val split lacks the first class, so on its own it numbers every other class one lower: scored by name, the
    run's figures equal a by-hand alignment, and the record names the class the memory has and val lacks."""
    t = str(workdir)
    main(["distill", "--config", f"{t}/recipe.yaml", f"data.val={t}/val_missing_first", "run.name=missing"])
    run = workdir / "runs" / "missing"
    results = json.loads((run / "results.json").read_text())
    hand = _by_hand(run, f"{t}/val_missing_first")
    assert results["knn"]["student"]["top1"] == pytest.approx(hand["student"], abs=1e-9)
    assert results["knn"]["teacher"]["top1"] == pytest.approx(hand["teacher"], abs=1e-9)
    assert results["data"]["classes"]["memory_classes_not_in_query"] == [CLASSES[0]]
    assert results["data"]["classes"]["query_images_scored"] == 9 * 50
    assert results["data"]["classes"]["names"] == CLASSES
    printed = capsys.readouterr().out
    assert "(classes matched by name: scored on 9 of the memory's 10 classes (1 absent from the evaluation split))" in printed
    main(["report", str(run)])
    assert "classes matched by name: scored on 9 of the memory&#x27;s 10 classes" in (run / "report.html").read_text()


def test_shared_classes_scores_the_classes_both_have_and_says_so(workdir, capsys):
    t = str(workdir)
    main(["distill", "--config", f"{t}/recipe.yaml", f"data.val={t}/val_extra", "eval.shared_classes=true", "run.name=shared"])
    results = json.loads((workdir / "runs" / "shared" / "results.json").read_text())
    classes = results["data"]["classes"]
    assert classes["classes_left_out"] == ["zz_extra"] and classes["query_images_left_out"] == 50
    assert classes["query_images_scored"] == 10 * 50
    # the extra folder holds the first class's images under another name: leaving it out, the figures are those of the
    # plain val split
    main(["distill", "--config", f"{t}/recipe.yaml", "run.name=plain"])
    plain = json.loads((workdir / "runs" / "plain" / "results.json").read_text())
    assert results["knn"]["student"]["top1"] == plain["knn"]["student"]["top1"]
    assert results["knn"]["teacher"]["top1"] == plain["knn"]["teacher"]["top1"]
