import pytest
import timm
from safetensors.torch import save_file

from ssdistill import evaluate
from ssdistill.errors import ConfigError


@pytest.fixture
def weights(tmp_path):
    """A local weights file standing in for the teacher's hub download."""
    path = tmp_path / "t.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()}, str(path))
    return path


def test_evaluate_a_teacher_alone_retrieves_each_image_itself(weights, labelled_folder):
    knn = evaluate(teacher="test_resnet", weights=str(weights), train=str(labelled_folder), val=str(labelled_folder), k=1, num_workers=0)
    # memory == query: the nearest neighbour of every image is the image itself
    assert knn["test_resnet"]["top1"] == 100.0 and knn["test_resnet"]["images_per_s"] > 0


def test_a_teacher_alone_is_evaluated_at_the_resolution_asked_for(weights, labelled_folder):
    """--resolution resizes the teacher's view (a student's input size): the row says the side, and a smaller side
    costs fewer FLOPs."""
    rows = {
        side: evaluate(teacher="test_resnet", weights=str(weights), resolution=side, train=str(labelled_folder), val=str(labelled_folder), k=1, num_workers=0)["test_resnet"]
        for side in (16, 48)
    }
    assert rows[16]["resolution"] == 16 and rows[48]["resolution"] == 48
    assert rows[16]["gflops"] < rows[48]["gflops"]
    with pytest.raises(ConfigError, match="--resolution 0: .*greater than 0"):
        evaluate(teacher="test_resnet", weights=str(weights), resolution=0, train=str(labelled_folder), val=str(labelled_folder))


def test_evaluate_needs_a_run_or_a_teacher_with_data():
    with pytest.raises(ConfigError, match="--teacher"):
        evaluate()
    with pytest.raises(ConfigError, match="--train and --val"):
        evaluate(teacher="efficientnet_lite0")


def test_the_cli_prints_the_teacher_row_with_its_side(weights, labelled_folder, capsys):
    from ssdistill.cli import main

    main(["eval", "--teacher", "test_resnet", "--weights", str(weights), "--resolution", "24", "--train", str(labelled_folder),
          "--val", str(labelled_folder), "--knn-only", "--num-workers", "0", "--k", "1"])
    header, row = capsys.readouterr().out.splitlines()[-2:]
    assert header.split()[:2] == ["model", "px"] and row.split()[:3] == ["test_resnet", "24", "100.0%"]
