import pytest
import timm
from safetensors.torch import save_file

from ssdistill import evaluate
from ssdistill.errors import ConfigError, DataError


@pytest.fixture
def weights(tmp_path):
    """A local weights file standing in for the teacher's hub download."""
    path = tmp_path / "t.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()}, str(path))
    return path


@pytest.fixture
def renamed_copy(labelled_folder):
    """The labelled folder's images under other file names: the same pixels, not the same split (its fingerprint
    differs), so a query finds its own copy in the memory."""
    import shutil

    root = labelled_folder.parent / "renamed"
    for image in labelled_folder.rglob("*.*"):
        target = root / image.parent.name / f"copy_{image.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, target)
    return root


def test_evaluate_a_teacher_alone_retrieves_each_image_itself(weights, labelled_folder, renamed_copy):
    knn = evaluate(teacher="test_resnet", weights=str(weights), train=str(labelled_folder), val=str(renamed_copy), k=1, num_workers=0)
    # the query images are the memory's: the nearest neighbour of every image is its copy
    assert knn["test_resnet"]["top1"] == 100.0 and knn["test_resnet"]["images_per_s"] > 0


def test_the_same_split_as_memory_and_query_is_refused(weights, labelled_folder):
    with pytest.raises(DataError, match=r"--val \(.*\) holds the same images as --train"):
        evaluate(teacher="test_resnet", weights=str(weights), train=str(labelled_folder), val=str(labelled_folder), k=1, num_workers=0)


def test_a_teacher_alone_is_evaluated_at_the_resolution_asked_for(weights, labelled_folder, renamed_copy):
    """--resolution resizes the teacher's view (a student's input size): the row says the side, and a smaller side
    costs fewer FLOPs."""
    rows = {
        side: evaluate(
            teacher="test_resnet", weights=str(weights), resolution=side, train=str(labelled_folder), val=str(renamed_copy), k=1, num_workers=0
        )["test_resnet"]
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


def test_the_cli_prints_the_teacher_row_with_its_side(weights, labelled_folder, renamed_copy, capsys):
    from ssdistill.cli import main

    main(
        [
            "eval",
            "--teacher",
            "test_resnet",
            "--weights",
            str(weights),
            "--resolution",
            "24",
            "--train",
            str(labelled_folder),
            "--val",
            str(renamed_copy),
            "--knn-only",
            "--num-workers",
            "0",
            "--k",
            "1",
        ]
    )
    header, row = capsys.readouterr().out.splitlines()[-2:]
    assert header.split()[:2] == ["model", "px"] and row.split()[:3] == ["test_resnet", "24", "100.0%"]
