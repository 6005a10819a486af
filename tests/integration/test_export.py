"""Export round trip: plain timm loads the student with identical features; ONNX matches under onnxruntime."""

import json

import numpy as np
import pytest
import timm
import torch

from integration.common import tiny_config
from ssdistill import distill
from ssdistill.api import load_student_from_run
from ssdistill.cli import main
from ssdistill.errors import ConfigError


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("export")
    distill(tiny_config(tmp_path, trainer={"epochs": 1}, eval={"teacher": True}), quiet=True)
    return tmp_path / "runs" / "tiny"


def test_plain_timm_loads_the_exported_student_with_identical_features(finished_run, capsys):
    main(["export", str(finished_run)])
    assert "pretrained_cfg_overlay" in capsys.readouterr().out
    folder = finished_run / "export"
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "test_resnet" and config["num_classes"] == 0
    assert config["ssdistill"]["method"] == "feature" and "student" in config["ssdistill"]["evaluation"]["knn"]
    model = timm.create_model(config["architecture"], pretrained=True, pretrained_cfg_overlay=dict(file=str(folder / "student.safetensors")), num_classes=0).eval()
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
        from ssdistill.export import export_run

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
    assert "img_size=32)" in capsys.readouterr().out
    config = json.loads((run / "export" / "config.json").read_text())
    assert config["model_args"] == {"img_size": 32}
    model = timm.create_model(config["architecture"], pretrained=True, pretrained_cfg_overlay=dict(file=str(run / "export" / "student.safetensors")),
                              num_classes=0, **config["model_args"]).eval()
    _, student = load_student_from_run(run)
    images = torch.rand(3, 3, 32, 32)
    mean, std = (torch.tensor(config["pretrained_cfg"][k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        assert torch.allclose(model((images - mean) / std), student.eval()(images), atol=1e-6)
