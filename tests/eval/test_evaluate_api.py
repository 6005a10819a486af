import pytest
import timm
from safetensors.torch import save_file

from ssdistill import evaluate
from ssdistill.errors import ConfigError


def test_evaluate_a_teacher_alone_retrieves_each_image_itself(tmp_path, labelled_folder):
    weights = tmp_path / "t.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()}, str(weights))
    knn = evaluate(teacher="test_resnet", weights=str(weights), train=str(labelled_folder), val=str(labelled_folder), k=1, num_workers=0)
    # memory == query: the nearest neighbour of every image is the image itself
    assert knn["test_resnet"]["top1"] == 100.0 and knn["test_resnet"]["images_per_s"] > 0


def test_evaluate_needs_a_run_or_a_teacher_with_data():
    with pytest.raises(ConfigError, match="--teacher"):
        evaluate()
    with pytest.raises(ConfigError, match="--train and --val"):
        evaluate(teacher="efficientnet_lite0")
