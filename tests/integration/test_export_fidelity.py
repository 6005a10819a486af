"""Export fidelity: plain timm, with the preprocessing the export declares, reproduces the run's recorded k-NN figure
exactly (a script that imports no ssdistill); timm's transform equals the evaluation view pixel for pixel, for large
images (centre crop) and small ones (straight resize, with a mixed evaluation said so); config.json is what timm's own
Hub writer writes plus our provenance, without local paths and with rounded numbers; the model card parses with
huggingface_hub and carries the figures as model-index; export refuses a folder holding files it did not write."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from huggingface_hub import ModelCard
from PIL import Image

from ssdistill import distill
from ssdistill.api import load_student_from_run
from ssdistill.cli import main
from ssdistill.data.views import original_view
from ssdistill.export import export_run
from ssdistill.export_config import DECLARED_KEYS, crop_pct_for, dataset_name, declared_preprocessing

from conftest import DEMO_DATA, write_images
from integration.common import tiny_config

PLAIN_TIMM = r'''
import json, sys
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

folder, memory_root, query_root, k, temperature, batch = sys.argv[1:]
k, temperature, batch = int(k), float(temperature), int(batch)
torch.set_num_threads(1)
model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def split(root, classes=None):
    """(image paths, labels) of a class-folder split, labels in the memory split's class order (by name)."""
    names = sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = classes or names
    paths, labels = [], []
    for name in names:
        for path in sorted(Path(root, name).rglob("*")):
            if path.suffix.lower() in EXTENSIONS and not path.name.startswith("."):
                paths.append(path)
                labels.append(classes.index(name))
    return paths, torch.tensor(labels), names


@torch.no_grad()
def features(paths):
    rows = []
    for start in range(0, len(paths), batch):
        images = [transform(Image.open(p).convert("RGB")) for p in paths[start:start + batch]]
        rows.append(model(torch.stack(images)).float())
    return torch.cat(rows)


memory_paths, memory_labels, classes = split(memory_root)
query_paths, query_labels, _ = split(query_root, classes)
bank = torch.nn.functional.normalize(features(memory_paths), dim=1)
query = torch.nn.functional.normalize(features(query_paths), dim=1)
similarity, neighbour = (query @ bank.T).topk(min(k, len(bank)), dim=1)
votes = torch.zeros(len(query), len(classes)).scatter_add_(1, memory_labels[neighbour], (similarity / temperature).exp())
ranked = votes.argsort(dim=1, descending=True)
truth = query_labels.view(-1, 1)
assert not any(name.split(".")[0] == "ssdistill" for name in sys.modules), "the plain-timm script imported ssdistill"
print(json.dumps({"top1": 100.0 * (ranked[:, :1] == truth).any(1).float().mean().item(),
                  "top5": 100.0 * (ranked[:, :5] == truth).any(1).float().mean().item()}))
'''


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One epoch of the tiny student on the whole demo train split (1000 images), evaluated with the full suite on the
    whole val split (500): a real figure, in about half a minute."""
    tmp_path = tmp_path_factory.mktemp("fidelity")
    distill(tiny_config(tmp_path, trainer={"epochs": 1}, data={"train_subset": None}, eval={"suite": "full"}), quiet=True)
    run = tmp_path / "runs" / "tiny"
    written = export_run(run, licence="apache-2.0")
    return run, written["config"].parent


def _leaves(value):
    """Every key and leaf value of a nested JSON-like value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _strings(value):
    return [leaf for leaf in _leaves(value) if isinstance(leaf, str)]


def _floats(value):
    return [leaf for leaf in _leaves(value) if isinstance(leaf, float)]


def _front_matter(card_text: str) -> dict:
    return yaml.safe_load(card_text.split("---\n")[1])


def test_plain_timm_reproduces_the_recorded_knn_exactly(demo_run):
    """A script importing only torch, timm, PIL and numpy loads local-dir:EXPORT, builds timm's own transform from the
    export's config and scores the weighted k-NN of results.json's protocol: the student's recorded top-1 exactly."""
    run, folder = demo_run
    results = json.loads((run / "results.json").read_text())
    protocol, batch = results["protocol"]["knn"], results["config"]["data"]["eval_batch_size"]
    script = run.parent / "plain_timm_knn.py"
    script.write_text(PLAIN_TIMM)
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            str(folder),
            str(DEMO_DATA / "train"),
            str(DEMO_DATA / "val"),
            str(protocol["k"]),
            str(protocol["temperature"]),
            str(batch),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    recorded = results["knn"]["student"]
    assert results["data"]["train_size"] == 1000 and measured["top1"] == recorded["top1"] and measured["top5"] == recorded["top5"]
    config = json.loads((folder / "config.json").read_text())
    assert config["ssdistill"]["evaluation"]["knn"]["student"]["top1"] == round(recorded["top1"], 2)


def _timm_pixels(transform, image: Image.Image) -> np.ndarray:
    """timm's eval transform up to (not including) the tensor conversion and normalisation, as uint8 pixels."""
    steps = [t for t in transform.transforms if type(t).__name__ not in ("MaybeToTensor", "ToTensor", "Normalize")]
    for step in steps:
        image = step(image)
    return np.asarray(image)


def _view_pixels(view, image: Image.Image) -> np.ndarray:
    return (view(image) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def test_timm_transform_equals_the_evaluation_view_pixel_for_pixel_on_demo_images(demo_run):
    run, folder = demo_run
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    data = timm.data.resolve_data_config({}, model=model)
    assert data["crop_mode"] == "center" and data["interpolation"] == "bicubic" and math.floor(32 / data["crop_pct"]) == round(32 / 0.875)
    transform, view = timm.data.create_transform(**data), original_view(32)
    for path in sorted((DEMO_DATA / "val").rglob("*.jpg"))[::25]:
        image = Image.open(path).convert("RGB")
        assert np.array_equal(_timm_pixels(transform, image), _view_pixels(view, image)), path
        mean, std = (torch.tensor(data[k]).view(3, 1, 1) for k in ("mean", "std"))
        assert torch.allclose(transform(image), (view(image) - mean) / std, atol=1e-5)  # the float conversion: 1 ulp apart at most
    with pytest.raises(AssertionError):  # the control: timm's default crop_pct 0.875 resizes to 36 px, not 37
        image = Image.open(path).convert("RGB")
        assert np.array_equal(_timm_pixels(timm.data.create_transform(**{**data, "crop_pct": 0.875}), image), _view_pixels(view, image))


@pytest.mark.parametrize("resolution", [16, 32, 96, 160, 224, 384, 518, 1024])
def test_the_declared_crop_pct_gives_the_evaluation_resize_side(resolution):
    pct = crop_pct_for(resolution)
    assert math.floor(resolution / pct) == round(resolution / 0.875) and len(repr(pct)) <= 8
    assert math.floor(resolution / float(json.loads(json.dumps(pct)))) == round(resolution / 0.875)


def test_declared_preprocessing_follows_the_evaluation_images():
    crop, record = declared_preprocessing(96, (0.5,) * 3, (0.5,) * 3, {"cropped": 10, "resized": 0, "examined": 10, "total": 10})
    assert (crop["crop_mode"], crop["crop_pct"], record["reproduces"]) == ("center", crop_pct_for(96), "all")
    squash, record = declared_preprocessing(96, (0.5,) * 3, (0.5,) * 3, {"cropped": 0, "resized": 7, "examined": 7, "total": 7})
    assert (squash["crop_mode"], squash["crop_pct"], record["reproduces"]) == ("squash", 1.0, "all")
    mixed, record = declared_preprocessing(96, (0.5,) * 3, (0.5,) * 3, {"cropped": 3, "resized": 7, "examined": 10, "total": 10})
    assert (mixed["crop_mode"], record["reproduces"]) == ("squash", "7 of 10")
    unknown, record = declared_preprocessing(96, (0.5,) * 3, (0.5,) * 3, None)
    assert unknown["crop_mode"] == "center" and record["reproduces"].startswith("unknown")


def test_dataset_names_carry_no_path():
    assert dataset_name("/home/me/data/imagenette_mini/val") == ("imagenette_mini", "val")
    assert dataset_name("cifar10:test") == ("cifar10", "test") and dataset_name("stl10") == ("stl10", "train")
    assert dataset_name("/x/lists/train.txt") == ("lists", "train") and dataset_name("/x/my_photos/") == ("my_photos", None)
    assert dataset_name("wds:/x/shards/part-{0000..0009}.tar") == ("shards", None)


def test_config_json_is_what_timms_own_writer_writes_plus_provenance(demo_run, tmp_path):
    """Every key timm's save_config_for_hf writes for the same backbone is there with the same value, except the
    preprocessing the export declares (and the licence / tag of the architecture's default weights, which are not
    these weights)."""
    from timm.models._hub import save_config_for_hf

    run, folder = demo_run
    exported = json.loads((folder / "config.json").read_text())
    _, student = load_student_from_run(run)
    save_config_for_hf(student.backbone, str(tmp_path / "timm.json"))
    own = json.loads((tmp_path / "timm.json").read_text())
    assert set(exported) == set(own) | {"ssdistill"}
    for key in own:
        if key != "pretrained_cfg":
            assert exported[key] == own[key], key
    for key, value in own["pretrained_cfg"].items():
        if key not in DECLARED_KEYS:
            assert exported["pretrained_cfg"][key] == value, key
    declared = exported["pretrained_cfg"]
    assert declared["input_size"] == [3, 32, 32] and declared["crop_mode"] == "center" and declared["interpolation"] == "bicubic"
    assert declared["license"] == "apache-2.0" and "tag" not in declared and declared["mean"] == list(student.mean)
    assert exported["num_features"] == student.backbone.num_features == exported["ssdistill"]["feature_dim"]


def test_num_features_is_timms_and_the_feature_width_is_recorded_beside_it(tmp_path):
    """MobileNetV3 returns its head's 1024 features; timm's num_features is the 576 before it: config.json says what
    timm says, and ssdistill.feature_dim the width the model returns."""
    from ssdistill.export_config import timm_hub_config
    from ssdistill.models.students import Student

    student = Student("mobilenetv3_small_100", resolution=32)
    data, _ = declared_preprocessing(32, student.mean, student.std, None)
    config = timm_hub_config(student.backbone, data, tmp_path / "config.json", "other")
    assert config["num_features"] == student.backbone.num_features == 576 and student.dim == 1024


def test_nothing_exported_holds_a_local_path_and_numbers_are_rounded(demo_run):
    run, folder = demo_run
    config = json.loads((folder / "config.json").read_text())
    card = (folder / "README.md").read_text()
    front = _front_matter(card)
    for text in [*_strings(config), *_strings(front)]:
        assert not text.startswith("/") and "/tmp" not in text and str(Path.home()) not in text, text
    for name in ("config.json", "README.md"):
        text = (folder / name).read_text()
        assert str(run.parent.parent) not in text and str(DEMO_DATA) not in text and str(Path.home()) not in text
    for value in [*_floats(config), *_floats(front)]:
        assert float(f"{value:.6g}") == value, value
    for value in _floats(config["ssdistill"]):
        assert value == (round(value, 2) if abs(value) >= 1 else float(f"{value:.4g}")), value
    assert config["ssdistill"]["train_data"] == {
        "name": "imagenette_mini",
        "split": "train",
        "fingerprint": json.loads((run / "results.json").read_text())["data"]["train_fingerprint"],
        "images": 1000,
    }
    assert (
        config["ssdistill"]["teacher"]["weights"]["file"] == "teacher.safetensors" and len(config["ssdistill"]["teacher"]["weights"]["sha256"]) == 64
    )


def test_the_card_parses_with_huggingface_hub_and_its_model_index_is_the_recorded_figures(demo_run):
    run, folder = demo_run
    card = ModelCard.load(folder / "README.md")
    results = json.loads((run / "results.json").read_text())
    suite = results["evaluation"]["models"]["student"]
    expected = {}
    for name, scores in suite["knn"].items():
        expected[(f"knn_{name}", "accuracy")] = scores["top1"]
        expected[(f"knn_{name}", "top_5_accuracy")] = scores["top5"]
    expected[("linear", "accuracy")], expected[("linear", "top_5_accuracy")] = suite["linear"]["top1"], suite["linear"]["top5"]
    for fraction, scores in suite["few_shot"].items():
        expected[(f"few_shot_{fraction}", "accuracy")] = scores["top1"]
    for name, value in suite["clustering"].items():
        expected[("kmeans", name)] = value
    got = {(r.metric_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert got == {key: round(value, 2) for key, value in expected.items()}
    assert {(r.dataset_name, r.dataset_split) for r in card.data.eval_results} == {("imagenette_mini", "val")}
    assert card.data.library_name == "timm" and card.data.pipeline_tag == "image-feature-extraction" and card.data.license == "apache-2.0"
    assert card.data.datasets == ["imagenette_mini"] and card.data.base_model is None  # the teacher is a local file
    assert "model-index" in (folder / "README.md").read_text()
    row = results["knn"]["student"]
    body = card.text
    assert f"{row['images_per_s']:.0f} images/s" in body and "GFLOPs" in body and "M parameters" in body and "CPU" in body
    assert "1 of 1 planned epoch," in body and "1 warm-up epoch)" in body and "1 warm-up epochs" not in body
    assert "resized each image's shorter side to 37 px (round(32 / 0.875), bicubic) and cropped the centre 32 px" in body
    assert "The snippet reproduces its figures." in body


def test_base_model_is_the_teacher_when_it_is_a_hub_model(demo_run):
    from ssdistill.modelcard import model_card
    from ssdistill.recipe import build_config

    run, folder = demo_run
    config = json.loads((folder / "config.json").read_text())
    results = json.loads((run / "results.json").read_text())
    cfg = build_config(run / "config.yaml", {"teacher": {"name": "vit_small_patch14_dinov2.lvd142m", "weights": None, "resolution": 224}})
    card = ModelCard(model_card(cfg, config, results))
    assert card.data.base_model == "timm/vit_small_patch14_dinov2.lvd142m" and card.data.eval_results


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    """Small images (32 px, the straight-resize path) for training and the k-NN memory; an evaluation split of small
    images and a few 128 px demo images (the centre-crop path)."""
    tmp_path = tmp_path_factory.mktemp("mixed")
    for c, name in enumerate(("a", "b")):
        write_images(tmp_path / "small" / "train" / name, 12, size=32, seed=c)
        write_images(tmp_path / "small" / "val" / name, 8, size=32, seed=10 + c)
        for source in sorted((DEMO_DATA / "val" / sorted(p.name for p in (DEMO_DATA / "val").iterdir())[c]).iterdir())[:3]:
            shutil.copy(source, tmp_path / "small" / "val" / name / source.name)
    config = tiny_config(
        tmp_path,
        trainer={"epochs": 1},
        eval={"knn_k": 5},
        data={"train": str(tmp_path / "small" / "train"), "val": str(tmp_path / "small" / "val"), "train_subset": None},
    )
    distill(config, quiet=True)
    return tmp_path / "runs" / "tiny"


def test_a_mixed_evaluation_declares_the_majority_path_and_says_no_single_transform_reproduces_it(mixed_run, tmp_path):
    main(["export", str(mixed_run), "--output", str(tmp_path / "mixed")])
    config = json.loads((tmp_path / "mixed" / "config.json").read_text())
    assert (config["pretrained_cfg"]["crop_mode"], config["pretrained_cfg"]["crop_pct"]) == ("squash", 1.0)
    record = config["ssdistill"]["preprocessing"]
    assert record["evaluation_images"] == {"cropped": 6, "resized": 40, "examined": 46, "total": 46} and record["reproduces"] == "40 of 46"
    card = (tmp_path / "mixed" / "README.md").read_text()
    assert "No single timm transform reproduces the evaluation" in card and "max(image.size) > 96" in card
    model = timm.create_model(f"local-dir:{tmp_path / 'mixed'}", pretrained=True)
    transform, view = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model)), original_view(32)
    small = next((mixed_run.parent.parent / "small" / "val" / "a").glob("img*.jpg"))
    image = Image.open(small).convert("RGB")
    assert image.size == (32, 32) and np.array_equal(_timm_pixels(transform, image), _view_pixels(view, image))
    wide = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 48, 3), dtype=np.uint8))  # not square: squashed
    assert np.array_equal(_timm_pixels(transform, wide), _view_pixels(view, wide))


def test_export_refuses_a_folder_holding_files_it_did_not_write(demo_run, mixed_run, tmp_path, capsys):
    run, folder = demo_run
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("my notes")
    (target / "config.json").write_text('{"mine": true}')
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(run), "--output", str(target)])
    message = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and message.count("\n") == 0
    assert message == (
        f"error: the export folder {target} already holds files that export did not write (notes.txt): export into "
        "a new or empty folder with --output, or pass --overwrite to write into it anyway"
    )
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "notes.txt"] and json.loads((target / "config.json").read_text()) == {
        "mine": True
    }
    (target / "notes.txt").unlink()  # only our file names, but not our export: refused as well
    with pytest.raises(SystemExit):
        main(["export", str(run), "--output", str(target)])
    assert "holds the export of another run" in capsys.readouterr().err
    (target / "notes.txt").write_text("my notes")
    main(["export", str(run), "--output", str(target), "--overwrite"])
    assert json.loads((target / "config.json").read_text())["architecture"] == "test_resnet" and (target / "notes.txt").read_text() == "my notes"
    main(["export", str(run)])  # a previous export of the same run is replaced without a word
    assert "card:" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # another run's export folder
        main(["export", str(mixed_run), "--output", str(folder)])
    assert f"error: the export folder {folder} holds the export of another run" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit):
        main(["export", str(run), "--output", str(tmp_path / "file")])
    assert "is a file: give --output a folder" in capsys.readouterr().err


def test_an_older_timm_writer_without_data_config_gives_the_same_config(tmp_path, monkeypatch):
    """timm before data_config: the writer's output with the declared preprocessing set by hand equals what the newer
    writer writes with it."""
    import timm.models._hub as hub

    from ssdistill.export_config import timm_hub_config
    from ssdistill.models.students import Student

    student = Student("test_resnet", resolution=32)
    data, _ = declared_preprocessing(32, student.mean, student.std, None)
    current = timm_hub_config(student.backbone, data, tmp_path / "new.json", "other")
    writer = hub.save_config_for_hf
    monkeypatch.setattr(
        hub, "save_config_for_hf", lambda model, config_path, model_config=None, model_args=None: writer(model, config_path, model_config, model_args)
    )
    assert timm_hub_config(student.backbone, data, tmp_path / "old.json", "other") == current


# ----- the figures belong to the exported checkpoint; the export folder's run identity; the card's wording (review 2, 6, 7, 10, 14, 15)


def _run_copy(run: Path, where: Path) -> Path:
    """A copy of a finished run (its records and checkpoints; no export, no features) to edit."""
    copy = where / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("export", "features"))
    return copy


def _edit_json(path: Path, **changes) -> dict:
    record = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps(record))
    return record


def test_figures_come_from_the_one_record_that_measured_the_exported_checkpoint(demo_run, tmp_path):
    run = _run_copy(demo_run[0], tmp_path)
    results = json.loads((run / "results.json").read_text())
    step = results["steps"]
    other = {"train": results["data"]["knn_train"], "val": "/elsewhere/other_set/val"}
    gpu = {"gpu": "NVIDIA H100 80GB HBM3", "cpus": 16, "cpu_model": "Some CPU"}
    row = {"top1": 11.0, "top5": 22.0, "params_m": 1.5, "gflops": 0.25, "images_per_s": 1234.0}
    evaluation = {"step": step - 1, "knn": {"student": row}, "evaluation": None, "data": other, "machine": gpu}
    (run / "evaluation.json").write_text(json.dumps(evaluation))  # `eval --checkpoint` of an earlier checkpoint
    figures = json.loads(export_run(run, output=tmp_path / "a")["config"].read_text())["ssdistill"]["evaluation"]
    assert figures["source"] == "results.json" and figures["step"] == step
    assert figures["knn"]["student"]["top1"] == round(results["knn"]["student"]["top1"], 2) and figures["data"]["name"] == "imagenette_mini"
    assert "suite" in figures  # results.json's own suite, not mixed with the other record

    (run / "evaluation.json").write_text(json.dumps({**evaluation, "step": step}))  # `eval --val OTHER` of the final checkpoint
    written = export_run(run, output=tmp_path / "b")
    figures = json.loads(written["config"].read_text())["ssdistill"]["evaluation"]
    assert figures["source"] == "evaluation.json" and figures["knn"] == {"student": {"top1": 11.0, "top5": 22.0}}
    assert figures["data"] == {"name": "other_set", "split": "val"} and "suite" not in figures  # k-NN, suite and data: one record
    card = written["card"].read_text()
    assert "measured by `ssdistill eval` on a NVIDIA H100 80GB HBM3 GPU)" in card  # eval measures on the GPU when there is one
    assert {(r.dataset_name, r.metric_value) for r in ModelCard(card).data.eval_results} == {("other_set", 11.0), ("other_set", 22.0)}


def test_results_json_figures_name_the_device_the_run_evaluated_on(demo_run, tmp_path):
    """The run's own evaluation ran on its trainer.accelerator: a CPU run on a machine with a GPU measured on the CPU."""
    run = _run_copy(demo_run[0], tmp_path)
    results = json.loads((run / "results.json").read_text())
    config = {**results["config"], "trainer": {**results["config"]["trainer"], "accelerator": "cpu"}}
    _edit_json(run / "results.json", machine={**results["machine"], "gpu": "NVIDIA H100 80GB HBM3"}, config=config)
    card = export_run(run, output=tmp_path / "cpu")["card"].read_text()
    assert "H100" not in card and "measured by the run's evaluation on a" in card and f"{results['machine']['cpu_model']} CPU" in card
    _edit_json(run / "results.json", machine=None)
    assert "measured by the run's evaluation on the machine that ran the evaluation)" in export_run(run, output=tmp_path / "none")["card"].read_text()


def test_an_export_of_a_checkpoint_no_record_measured_carries_no_figures_and_says_so(demo_run, tmp_path, caplog):
    run = _run_copy(demo_run[0], tmp_path)
    step = _edit_json(run / "results.json", steps=json.loads((run / "results.json").read_text())["steps"] + 5)["steps"] - 5
    with caplog.at_level("WARNING", logger="ssdistill"):
        written = export_run(run, output=tmp_path / "none")
    figures = json.loads(written["config"].read_text())["ssdistill"]["evaluation"]
    reason = f"the run's evaluations measured other checkpoints (results.json step {step + 5}), not this one (step {step})"
    assert figures == {"row": "student", "step": step, "missing": f"{reason}; `ssdistill eval RUN` measures them"}
    card = written["card"].read_text()
    assert f"No evaluation figures: {reason}; `ssdistill eval RUN` measures them, and export again." in card
    assert not ModelCard(card).data.eval_results and "images/s" not in card
    assert (
        f"the export of {run / 'checkpoints' / 'last.ckpt'} carries no evaluation figures: {reason}; `ssdistill eval {run}` measures them"
        in caplog.text
    )


def test_a_damaged_results_json_is_one_line_and_an_older_one_gives_no_figures(demo_run, tmp_path, capsys):
    run = _run_copy(demo_run[0], tmp_path)
    text = (run / "results.json").read_text()
    (run / "results.json").write_text(text[: len(text) // 2])
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(run), "--output", str(tmp_path / "out")])
    message = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and message.count("\n") == 0 and message.startswith(f"error: {run / 'results.json'} is damaged (not valid JSON: ")
    assert message.endswith(f"remove it and evaluate the run with `ssdistill eval {run}` (the export then takes that evaluation's figures)")
    old = {k: v for k, v in json.loads(text).items() if k not in ("results_version", "method")}
    (run / "results.json").write_text(json.dumps(old))
    figures = json.loads(export_run(run, output=tmp_path / "out")["config"].read_text())["ssdistill"]["evaluation"]
    assert figures["missing"] == "the run's results.json was written by an older ssdistill; `ssdistill eval RUN` measures them"


def test_a_resumed_moved_run_and_a_killed_export_are_still_the_same_run(demo_run, tmp_path):
    """The run identity ignores config.yaml's safe overrides (a resume rewrites it) and the run's folder (moved or
    copied); a folder with only export files and no config.json (an export killed after model.safetensors) is ours."""
    run = _run_copy(demo_run[0], tmp_path / "first")
    out = tmp_path / "out"
    export_run(run, output=out)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["eval"]["knn_k"] += 1
    config["data"]["num_workers"] = 1
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    moved = tmp_path / "elsewhere" / run.name
    shutil.move(str(run), str(moved))
    export_run(moved, output=out)  # not "the export of another run"
    (out / "config.json").unlink()
    (out / "README.md").unlink()
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]
    export_run(moved, output=out)
    config["trainer"]["seed"] += 1  # a forced change of what is trained: another run's export is refused
    (moved / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(Exception, match="holds the export of another run"):
        export_run(moved, output=out)


def test_counts_read_in_full_and_the_snippet_reads_images_upright(demo_run):
    from ssdistill.modelcard import plural

    assert plural(1281167, "image") == "1,281,167 images" and plural(1, "epoch") == "1 epoch" and plural(0.5, "epoch") == "0.5 epochs"
    assert plural(1281167.0, "image") == "1,281,167 images"
    card = (demo_run[1] / "README.md").read_text()
    assert 'image = ImageOps.exif_transpose(image).convert("RGB")' in card and "from PIL import ImageOps" in card
    assert "transparent images, which the evaluation laid on white" in card and "16-bit images, which it scaled to 8 bits" in card


def test_the_size_census_of_a_skip_corrupt_run_decodes_no_image(tmp_path, monkeypatch):
    """Export opens the evaluation splits without skip_corrupt (which decodes every image) and leaves an image whose
    header cannot be read out of the census."""
    import ssdistill.data.datasets as datasets
    from ssdistill.export import census_sources
    from ssdistill.export_config import evaluation_paths
    from ssdistill.recipe import build_config

    for name in ("a", "b"):
        write_images(tmp_path / "data" / "train" / name, 3, size=32, seed=1)
        write_images(tmp_path / "data" / "val" / name, 2, size=32, seed=2)
    (tmp_path / "data" / "val" / "a" / "broken.jpg").write_bytes(b"not an image")
    cfg = build_config(
        tiny_config(
            tmp_path,
            data={"train": str(tmp_path / "data" / "train"), "val": str(tmp_path / "data" / "val"), "skip_corrupt": True, "train_subset": None},
        )
    )

    def decoding(*args, **kwargs):
        raise AssertionError("the census decoded every image (skip_corrupt)")

    monkeypatch.setattr(datasets, "keep_readable", decoding)
    counts = evaluation_paths(census_sources(cfg, None))
    assert counts == {"cropped": 0, "resized": 10, "examined": 10, "total": 11, "unreadable": 1}
