"""Export round trip: plain timm loads the student with identical features; ONNX matches under onnxruntime."""

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from ssdistill import distill
from ssdistill.api import load_student_from_run
from ssdistill.cli import main
from ssdistill.errors import ConfigError, ModelError
from ssdistill.export import export_run

from integration.common import tiny_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("export")
    distill(tiny_config(tmp_path, trainer={"epochs": 1}, eval={"teacher": True, "random_init": True}), quiet=True)
    return tmp_path / "runs" / "tiny"


def test_plain_timm_loads_the_exported_student_with_identical_features(finished_run, capsys):
    """The export folder is in timm's Hub layout: timm.create_model("local-dir:...") with no other argument gives the
    student, and timm's own data config gives its preprocessing."""
    main(["export", str(finished_run)])
    folder = finished_run / "export"
    assert f"timm.create_model('local-dir:{folder}', pretrained=True)" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "test_resnet" and config["num_classes"] == 0
    assert config["ssdistill"]["method"] == "feature" and "student" in config["ssdistill"]["evaluation"]["knn"]
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    data = timm.data.resolve_data_config({}, model=model)
    assert tuple(data["input_size"]) == (3, 32, 32) and tuple(data["mean"]) == tuple(config["pretrained_cfg"]["mean"])
    _, student = load_student_from_run(finished_run)
    student.eval()
    images = torch.rand(4, 3, 32, 32)
    mean, std = (torch.tensor(config["pretrained_cfg"][k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        assert torch.equal(model((images - mean) / std), student(images))
    assert model.num_features == config["num_features"] or model.head_hidden_size == config["num_features"]
    fresh = timm.create_model(config["architecture"], num_classes=0).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh((images - mean) / std), student(images))  # the weights really came from the file


def test_onnx_export_matches_pytorch_in_onnxruntime(finished_run, tmp_path):
    import onnxruntime  # a dev dependency: the check must run, not skip

    main(["export", str(finished_run), "--onnx", "--output", str(tmp_path)])
    session = onnxruntime.InferenceSession(str(tmp_path / "student.onnx"), providers=["CPUExecutionProvider"])
    _, student = load_student_from_run(finished_run)
    images = torch.rand(5, 3, 32, 32)  # another batch size than at export: the batch axis is dynamic
    with torch.no_grad():
        expected = student.eval()(images).numpy()
    assert np.abs(session.run(None, {"images": images.numpy()})[0] - expected).max() < 1e-4


def test_export_of_a_folder_that_is_no_run_says_so(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path)])
    assert "not a run directory" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        export_run(tmp_path)


def test_export_names_the_member_and_refuses_one_the_run_lacks(finished_run, tmp_path, capsys):
    main(["export", str(finished_run), "--member", "student", "--output", str(tmp_path / "member")])
    config = json.loads((tmp_path / "member" / "config.json").read_text())
    assert config["ssdistill"]["member"] == "student" and config["ssdistill"]["teachers"]["teacher"]["name"] == "test_resnet"
    with pytest.raises(SystemExit):
        main(["export", str(finished_run), "--member", "peer"])
    assert "the run has no student member 'peer'; its members are student" in capsys.readouterr().err


def test_a_vit_student_trains_at_its_resolution_and_exports_its_img_size(tmp_path, capsys):
    """A ViT built for 224 px (vit_tiny_patch16_224) as a 32 px student: it is created with img_size=32, and the export
    records that in config.json's model_args, which plain timm passes back to create_model."""
    distill(tiny_config(tmp_path, trainer={"epochs": 1}, student={"arch": "vit_tiny_patch16_224"}), quiet=True)
    run = tmp_path / "runs" / "tiny"
    main(["export", str(run)])
    assert "local-dir:" in capsys.readouterr().out
    config = json.loads((run / "export" / "config.json").read_text())
    assert config["model_args"]["img_size"] in (32, [32, 32])  # timm's writer records the factory's arguments
    model = timm.create_model(
        config["architecture"],
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(run / "export" / "model.safetensors")),
        **{**config["model_args"], "num_classes": 0},
    ).eval()
    assert torch.equal(timm.create_model(f"local-dir:{run / 'export'}", pretrained=True).state_dict()["pos_embed"], model.state_dict()["pos_embed"])
    _, student = load_student_from_run(run)
    images = torch.rand(3, 3, 32, 32)
    mean, std = (torch.tensor(config["pretrained_cfg"][k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        assert torch.allclose(model((images - mean) / std), student.eval()(images), atol=1e-6)


def test_the_model_card_names_method_teacher_data_schedule_and_the_evaluation_with_reference_rows(finished_run, tmp_path):
    written = export_run(finished_run, output=tmp_path / "card", licence="apache-2.0")
    card = written["card"].read_text()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    assert "library_name: timm" in front and "license: apache-2.0" in front and "pipeline_tag: image-feature-extraction" in front
    results = json.loads((finished_run / "results.json").read_text())
    assert "`feature` method" in body and 'timm.create_model("local-dir:' in body
    assert "| teacher | `test_resnet` | pooled |" in body  # teacher row: name, model, output, origin, licence
    assert "licence" in body and "not known" in body  # a test weights file: its licence cannot be known
    assert f"{results['data']['train_size']} images" in body and "1 of 1 planned epoch," in body
    for model in ("teacher", "random_init", "student"):  # the evaluation table, teacher and random init next to the student
        top1 = results["knn"][model]["top1"]
        assert f"| {model} | {top1:.1f} |" in body


def test_push_to_hub_creates_the_repository_and_uploads_the_export_folder(finished_run, tmp_path, monkeypatch):
    """No hub is reachable here: huggingface_hub's client is replaced at the upload call, everything before it is real."""
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, repo_type, private, exist_ok):
            calls.append(("create", repo_id, repo_type, private, exist_ok))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, repo_id, repo_type, folder_path, commit_message):
            calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    main(["export", str(finished_run), "--output", str(tmp_path / "hub"), "--push-to-hub", "me/tiny-student", "--private"])
    assert calls == [
        ("token", None),
        ("create", "me/tiny-student", "model", True, True),
        ("upload", "me/tiny-student", ["README.md", "config.json", "model.safetensors"]),
    ]
    assert 'timm.create_model("hf-hub:me/tiny-student", pretrained=True)' in (tmp_path / "hub" / "README.md").read_text()

    class Refused(FakeApi):
        def create_repo(self, **kwargs):
            raise PermissionError("403 Forbidden: you do not have write access\nlong trace")

    monkeypatch.setattr(huggingface_hub, "HfApi", Refused)
    with pytest.raises(ModelError, match=r"could not push .* me/tiny-student \(403 Forbidden: you do not have write access\): log in"):
        export_run(finished_run, output=tmp_path / "hub2", push_to_hub="me/tiny-student")


def test_a_licence_the_hub_does_not_know_becomes_other_with_its_name():
    from ssdistill.modelcard import licence_fields

    assert licence_fields("Apache-2.0") == ("apache-2.0", None) and licence_fields(None) == ("other", None)
    assert licence_fields("My Company Licence 1.0") == ("other", "my-company-licence-1.0")


def test_teacher_weights_origin_is_named_by_content_package_or_timm_record(tmp_path):
    from ssdistill.config import TeacherConfig
    from ssdistill.modelcard import weights_origin

    unknown = tmp_path / "mine.pth"
    unknown.write_bytes(b"not a known file")
    assert weights_origin(TeacherConfig(name="resnet18", weights=str(unknown)))["licence"].startswith("not known")
    assert weights_origin(TeacherConfig(name="efficientnet_lite0"))["licence"] == "Apache-2.0"
    dinov2 = weights_origin(TeacherConfig(name="vit_small_patch14_dinov2.lvd142m"))
    assert dinov2["licence"] == "apache-2.0" and "timm/vit_small_patch14_dinov2.lvd142m" in dinov2["origin"]
    cifar = sorted((Path(__file__).resolve().parents[2].parent / "shared" / "weights").glob("resnet56-*.th"))
    if cifar:  # checkouts with ../shared: the file is recognised by its sha256
        origin = weights_origin(TeacherConfig(name="cifar_resnet56", weights=str(cifar[0])))
        assert origin["licence"] == "BSD-2-Clause" and "akamaster/pytorch_resnet_cifar10" in origin["origin"]
