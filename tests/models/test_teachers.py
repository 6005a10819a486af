import pytest
import timm
import torch
from safetensors.torch import save_file

from ssdistill.config import TeacherConfig
from ssdistill.data.datasets import open_images
from ssdistill.data.views import original_view
from ssdistill.errors import ModelError
from ssdistill.models.cifar_resnet import CifarResNet
from ssdistill.models.teachers import build_teacher

from conftest import shared_weights

IMAGENETTE_TO_IMAGENET = [0, 217, 482, 491, 497, 566, 569, 571, 574, 701]


def test_efficientnet_lite0_builtin_knows_its_preprocessing_and_classifies_real_images(demo_data):
    teacher = build_teacher(TeacherConfig(name="efficientnet_lite0", output="logits"))
    pre = teacher.preprocess
    assert (pre.resolution, pre.mean, pre.std, pre.interpolation) == (224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")
    source = open_images(str(demo_data / "val"))
    picks = list(range(0, len(source), 25))  # 20 images, 2 per class
    view = original_view(pre.resolution, pre.crop_pct, pre.interpolation)
    images = torch.stack([view(source.load(i)) for i in picks])
    predicted = teacher(images)[:, IMAGENETTE_TO_IMAGENET].argmax(1)  # among the 10 Imagenette classes
    truth = torch.tensor([source.labels[i] for i in picks])
    assert (predicted == truth).float().mean() >= 0.9  # wrong weights or preprocessing give about 0.1
    pooled = build_teacher(TeacherConfig(name="efficientnet_lite0"))
    assert pooled.dim == 1280 and pooled(images[:2]).shape == (2, 1280)


def test_teacher_is_frozen_and_resizes_inputs():
    teacher = build_teacher(TeacherConfig(name="efficientnet_lite0"))
    teacher.train()
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.parameters())
    x = torch.rand(1, 3, 100, 100, requires_grad=True)
    out = teacher(x)
    assert out.shape == (1, 1280) and not out.requires_grad and out.dtype == torch.float32


def _save_cifar_checkpoint(path, depth=20):
    model = CifarResNet(depth).eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "best_prec1": 0.0}, path)
    return model


def test_cifar_resnet_from_a_hand_made_file(tmp_path):
    reference = _save_cifar_checkpoint(tmp_path / "r20.th")
    teacher = build_teacher(TeacherConfig(name="cifar_resnet20", weights=str(tmp_path / "r20.th"), channels_last=False))
    assert teacher.preprocess.resolution == 32 and teacher.dim == 64
    x = torch.rand(3, 3, 32, 32)
    normalised = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = reference.forward_head(reference.forward_features(normalised), pre_logits=True)
    assert torch.allclose(teacher(x), expected, atol=1e-5)
    with pytest.raises(ModelError, match="teacher.weights"):
        build_teacher(TeacherConfig(name="cifar_resnet20"))
    with pytest.raises(ModelError, match="missing"):
        build_teacher(TeacherConfig(name="cifar_resnet32", weights=str(tmp_path / "r20.th")))


def test_cifar_resnet56_shared_weights_load_strictly():
    path = shared_weights("resnet56")
    teacher = build_teacher(TeacherConfig(name="cifar_resnet56", weights=str(path), output="logits"))
    assert teacher(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_timm_teacher_from_a_local_file_with_key_remapping(tmp_path):
    reference = timm.create_model("test_resnet").eval()
    save_file({f"backbone.{k}": v.contiguous() for k, v in reference.state_dict().items()}, str(tmp_path / "w.safetensors"))
    cfg = TeacherConfig(name="test_resnet", weights=str(tmp_path / "w.safetensors"), key_map={"backbone.": ""}, resolution=32)
    teacher = build_teacher(cfg)
    x = torch.rand(2, 3, 32, 32)
    m = torch.tensor(reference.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    s = torch.tensor(reference.pretrained_cfg["std"]).view(1, 3, 1, 1)
    expected = reference.forward_head(reference.forward_features((x - m) / s), pre_logits=True)
    assert torch.allclose(teacher(x), expected, atol=1e-5)
    with pytest.raises(ModelError, match="missing.*unexpected"):
        build_teacher(cfg.model_copy(update={"key_map": {}}))


def test_shape_mismatch_and_unreadable_file_errors(tmp_path):
    state = timm.create_model("test_resnet").state_dict()
    key = next(k for k, v in state.items() if v.ndim == 4)
    state[key] = torch.zeros(1, 1, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ModelError, match=f"shape of '{key}'"):
        build_teacher(TeacherConfig(name="test_resnet", weights=str(tmp_path / "bad.pth")))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ModelError, match="cannot read weights file"):
        build_teacher(TeacherConfig(name="test_resnet", weights=str(tmp_path / "junk.pth")))
    with pytest.raises(ModelError, match="not found"):
        build_teacher(TeacherConfig(name="test_resnet", weights=str(tmp_path / "none.pth")))


def test_hub_loading_path_with_a_local_file_in_place_of_the_download(tmp_path):
    reference = timm.create_model("test_resnet").eval()
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(tmp_path / "hub.safetensors"))
    teacher = build_teacher(TeacherConfig(name="test_resnet", source="hub", weights=str(tmp_path / "hub.safetensors"), output="logits"))
    x = torch.rand(2, 3, 160, 160)
    m = torch.tensor(reference.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    s = torch.tensor(reference.pretrained_cfg["std"]).view(1, 3, 1, 1)
    assert teacher.preprocess.resolution == reference.pretrained_cfg["input_size"][-1]
    size = teacher.preprocess.resolution
    x = torch.rand(2, 3, size, size)
    assert torch.allclose(teacher(x), reference((x - m) / s), atol=1e-5)


def test_hub_without_network_says_to_use_a_local_file():
    with pytest.raises(ModelError, match="teacher.weights=PATH"):
        build_teacher(TeacherConfig(name="test_resnet", source="hub"))


def test_logits_need_a_classifier(tmp_path):
    state = timm.create_model("test_resnet", num_classes=0).state_dict()
    torch.save(state, tmp_path / "headless.pth")
    with pytest.raises(ModelError, match="no classifier"):
        build_teacher(TeacherConfig(name="test_resnet", weights=str(tmp_path / "headless.pth"), output="logits"))
    assert build_teacher(TeacherConfig(name="test_resnet", weights=str(tmp_path / "headless.pth"))).dim == 96


def test_teacher_keys_with_batch_statistics_leave_the_eval_teacher_unchanged(demo_data):
    teacher = build_teacher(TeacherConfig(name="efficientnet_lite0", channels_last=False))
    images = torch.stack([original_view(224)(open_images(str(demo_data / "val")).load(i)) for i in range(8)])
    before = teacher(images)
    torch.manual_seed(0)
    batch_mode = teacher(images, bn_groups=2)
    assert batch_mode.shape == before.shape and not torch.allclose(batch_mode, before, atol=1e-3)
    torch.manual_seed(0)
    assert torch.allclose(teacher(images, bn_groups=2), batch_mode, atol=1e-5)  # same sub-batches, same keys
    assert torch.equal(teacher(images), before)  # running statistics untouched


def test_a_named_module_tap_reads_that_module_of_the_teacher(tmp_path):
    reference = timm.create_model("test_resnet").eval()
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(tmp_path / "w.safetensors"))
    base = TeacherConfig(name="test_resnet", weights=str(tmp_path / "w.safetensors"), resolution=32)
    teacher = lambda output: build_teacher(base.model_copy(update={"output": output}))  # noqa: E731
    x = torch.rand(3, 3, 32, 32)
    # the classifier as a named head is the logits tap; the last block, averaged over space, is the pooled tap
    assert torch.allclose(teacher("module:fc")(x), teacher("logits")(x), atol=1e-6)
    assert torch.allclose(teacher("module:layer4")(x), teacher("pooled")(x), atol=1e-6)
    block = teacher("module:layer2")
    m = torch.tensor(reference.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    s = torch.tensor(reference.pretrained_cfg["std"]).view(1, 3, 1, 1)
    stem = reference.maxpool(reference.act1(reference.bn1(reference.conv1((x - m) / s))))
    expected = reference.layer2(reference.layer1(stem)).mean(dim=(2, 3))
    assert block.dim == expected.shape[1] and torch.allclose(block(x), expected, atol=1e-5)
    assert block.fingerprint != teacher("pooled").fingerprint  # the tap is part of what a cache entry is keyed by
    with pytest.raises(ModelError, match="no module 'layer9'.*top level: conv1, bn1"):
        teacher("module:layer9")


def test_a_malformed_tap_is_a_one_line_config_error():
    from ssdistill.errors import ConfigError
    from ssdistill.recipe import build_config

    with pytest.raises(ConfigError, match="teacher.output"):
        build_config({"teacher": {"name": "test_resnet", "output": "layer3"}})


DINOV2 = "vit_small_patch14_dinov2.lvd142m"


@pytest.fixture(scope="module")
def dinov2_download(tmp_path_factory):
    """A file standing in for the hub download of a DINOv2 ViT-S/14 backbone: its architecture at the released 518 px
    (37 x 37 + 1 position embeddings), no classifier, random weights."""
    reference = timm.create_model(DINOV2, pretrained=False)
    path = tmp_path_factory.mktemp("hub") / "dinov2.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    return path, reference.state_dict()


def test_a_dinov2_backbone_loads_through_the_hub_path_at_a_smaller_size(dinov2_download):
    """The hub path (timm's own pretrained loader) reads the local file in place of the download; model_args.img_size
    runs it at 56 px (position embeddings resampled from 37 x 37 to 4 x 4 by timm); it has no classifier, so the
    logits tap is a one-line error and the pooled tap is the 384-d class token."""
    path, state = dinov2_download
    teacher = build_teacher(TeacherConfig(name=DINOV2, source="hub", weights=str(path), model_args={"img_size": 56}))
    assert teacher.preprocess.resolution == 56 and teacher.dim == 384 and teacher.model.num_classes == 0
    loaded = teacher.model.state_dict()
    assert loaded["pos_embed"].shape == (1, 17, 384) and state["pos_embed"].shape == (1, 37 * 37 + 1, 384)
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k != "pos_embed")
    assert teacher(torch.rand(2, 3, 56, 56)).shape == (2, 384)
    with pytest.raises(ModelError, match="no classifier"):
        build_teacher(TeacherConfig(name=DINOV2, source="hub", weights=str(path), model_args={"img_size": 56}, output="logits"))
    with pytest.raises(ModelError, match="model_args is for timm teachers"):
        build_teacher(TeacherConfig(name="efficientnet_lite0", model_args={"img_size": 224}))


def test_a_dinov2_backbone_is_a_rob_teacher_through_the_projection_target(dinov2_download, tmp_path):
    """Its SSL head is not released, so RoB uses target=projection: k-means columns of its cached features; a step trains
    the student against it."""
    from ssdistill.recipe import build_config

    from integration.common import assembled, tiny_config

    path, _ = dinov2_download
    raw = tiny_config(tmp_path, teacher={"name": DINOV2, "source": "hub", "weights": str(path), "model_args": {"img_size": 56}, "resolution": None})
    raw["method"] = {"name": "rob", "projection_dim": 8, "local_crops": 1}
    cfg = build_config(raw)
    ctx, prepared, module = assembled(cfg)
    assert prepared.tensors["columns"].shape == (384, 8)
    batch = next(iter(torch.utils.data.DataLoader(prepared.dataset, batch_size=8)))
    assert batch["views"]["global0"].shape[-1] == 56  # the global crops are rendered at the teacher's size
    loss = module.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None for p in module.student.parameters())


def test_ssl_checkpoints_load_with_a_key_map_that_drops_the_rest(tmp_path):
    """A DINO full checkpoint (nested dicts, argparse arguments) and a MoCo checkpoint (query and key encoders, queue, an
    MLP head in place of the classifier): a prefix mapped to null drops its keys, "" matches every key."""
    import argparse

    reference = timm.create_model("test_resnet", num_classes=0).eval()
    backbone = reference.state_dict()
    dino = {
        "teacher": {**{f"backbone.{k}": v for k, v in backbone.items()}, "head.mlp.0.weight": torch.randn(8, 96)},
        "student": {f"backbone.{k}": torch.zeros_like(v) for k, v in backbone.items()},
        "args": argparse.Namespace(arch="x"),
        "epoch": 9,
    }
    torch.save(dino, tmp_path / "dino_full.pth")
    moco = {
        "state_dict": {
            **{f"module.encoder_q.{k}": v for k, v in backbone.items()},
            "module.encoder_q.fc.0.weight": torch.randn(96, 96),
            **{f"module.encoder_k.{k}": torch.zeros_like(v) for k, v in backbone.items()},
            "module.queue": torch.randn(16, 8),
        },
        "arch": "resnet",
        "epoch": 200,
    }
    torch.save(moco, tmp_path / "moco.pth.tar")
    x = torch.rand(2, 3, 32, 32)
    maps = {"dino_full.pth": {"teacher.backbone.": "", "": None}, "moco.pth.tar": {"module.encoder_q.fc.": None, "module.encoder_q.": "", "": None}}
    for name, key_map in maps.items():
        teacher = build_teacher(TeacherConfig(name="test_resnet", weights=str(tmp_path / name), key_map=key_map, resolution=32))
        assert all(torch.equal(teacher.model.state_dict()[k], v) for k, v in backbone.items())
        with pytest.raises(ModelError, match="fix teacher.key_map"):  # the default map keeps the other keys: a strict load refuses them
            build_teacher(TeacherConfig(name="test_resnet", weights=str(tmp_path / name), resolution=32))
    assert teacher(x).shape == (2, 96)


NAME_HINT = "(`ssdistill list` shows the built-in teachers; any timm name works, `timm.list_models()` lists them)"


@pytest.fixture
def no_hub(monkeypatch):
    """Fails the test if the hub is asked: names are checked before any network access."""

    def asked(*args, **kwargs):
        raise AssertionError("the hub was asked before the name was checked")

    monkeypatch.setattr("ssdistill.models.teachers._hub_reachable_or_fail", asked)
    monkeypatch.setattr("socket.create_connection", asked)


@pytest.mark.parametrize("source", ["auto", "hub"])
def test_a_misspelled_teacher_is_named_with_the_closest_before_the_hub_is_asked(no_hub, source):
    with pytest.raises(ModelError) as caught:
        build_teacher(TeacherConfig(name="resnet1888", source=source))
    assert str(caught.value) == f"unknown teacher 'resnet1888'; did you mean resnet18? {NAME_HINT}"
    with pytest.raises(ModelError, match=r"^unknown teacher 'efficientnet_lite00'; did you mean efficientnet_lite0\? "):
        build_teacher(TeacherConfig(name="efficientnet_lite00"))  # a built-in name is among the suggestions
    with pytest.raises(ModelError, match=r"^unknown teacher 'resnet1888.a1_in1k'; did you mean resnet18.a1_in1k\? "):
        build_teacher(TeacherConfig(name="resnet1888.a1_in1k", source=source))
    with pytest.raises(ModelError) as caught:
        build_teacher(TeacherConfig(name="qqqq_zzzz", source=source))
    assert str(caught.value) == f"unknown teacher 'qqqq_zzzz' {NAME_HINT}"


def test_a_pretrained_tag_or_weights_timm_does_not_have_are_named(no_hub, tmp_path):
    with pytest.raises(ModelError) as caught:
        build_teacher(TeacherConfig(name="test_resnet.r160_in1kk"))
    assert (
        str(caught.value)
        == "timm model 'test_resnet' has no pretrained weights tagged 'r160_in1kk'; did you mean test_resnet.r160_in1k? (its tags: r160_in1k)"
    )
    with pytest.raises(ModelError, match="^timm model 'coatnet_0_224' has no pretrained weights in timm; set teacher.weights=PATH"):
        build_teacher(TeacherConfig(name="coatnet_0_224", source="hub"))
    with pytest.raises(ModelError, match=r"^'cifar_resnet566' is not a built-in teacher; did you mean cifar_resnet56\? built-in: "):
        build_teacher(TeacherConfig(name="cifar_resnet566", source="builtin"))
    with pytest.raises(ModelError, match=r"^unknown teacher 'test_resnett'; did you mean test_resnet\? "):  # a local file too
        build_teacher(TeacherConfig(name="test_resnett", weights=str(tmp_path / "w.pth"), source="file"))


def test_a_misspelled_teacher_through_the_cli_is_one_line(no_hub, tmp_path, capsys, monkeypatch):
    import logging

    import yaml

    from ssdistill.cli import main

    from integration.common import tiny_config

    config = tiny_config(tmp_path)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(logging.getLogger("ssdistill"), "handlers", [])  # main's stderr handlers go with the test
    for argv in (
        ["distill", "--config", str(tmp_path / "recipe.yaml"), "teacher.name=resnet1888", "teacher.source=hub", "teacher.weights=null"],
        ["eval", "--teacher", "resnet1888", "--train", config["data"]["train"], "--val", config["data"]["val"]],
        ["cache", "--teacher", "resnet1888", "--data", config["data"]["val"], "--dir", str(tmp_path / "cache")],
    ):
        with pytest.raises(SystemExit) as exit_code:
            main(argv)
        err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("WARNING: ")]
        assert exit_code.value.code == 2 and err == [f"error: unknown teacher 'resnet1888'; did you mean resnet18? {NAME_HINT}"], err
    assert not (tmp_path / "runs" / "tiny").exists()
