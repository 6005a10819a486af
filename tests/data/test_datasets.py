import pytest
import torch
from PIL import Image

from ssdistill.config import AugConfig
from ssdistill.data.datasets import IndexedViews, SubsetImages, UnionImages, open_images, seeded_subset
from ssdistill.data.views import augmented_view, original_view
from ssdistill.errors import DataError

from conftest import write_images


def test_labelled_folder_has_classes_labels_and_indices(labelled_folder):
    source = open_images(str(labelled_folder))
    assert source.classes == ["cat", "dog", "eel"] and len(source) == 12
    assert source.labels == [0] * 4 + [1] * 4 + [2] * 4
    dataset = IndexedViews(source, {"a": original_view(24), "b": original_view(16)})
    item = dataset[5]
    assert item["index"] == 5 and item["label"] == 1
    assert item["views"]["a"].shape == (3, 24, 24) and item["views"]["b"].shape == (3, 16, 16)


def test_a_union_of_folders_fingerprints_as_the_folder_with_the_same_files_in_the_same_order(tmp_path):
    """So the teacher cache one row fills for a folder serves a row that reads the same images as a union of task
    folders (Q3's feature_multi and CKA rows), while a changed order, file or kind of source gets its own entry."""
    for c, name in enumerate(["cat", "dog", "eel", "fox"]):
        write_images(tmp_path / "all" / name, 3, seed=c)
        write_images(tmp_path / ("a" if c < 2 else "b") / name, 3, seed=c)
    whole = open_images(str(tmp_path / "all"))
    a, b = open_images(str(tmp_path / "a")), open_images(str(tmp_path / "b"))
    assert UnionImages({"a": a, "b": b}).fingerprint() == whole.fingerprint()
    assert UnionImages({"first": a, "second": b}).fingerprint() == whole.fingerprint()  # names are not content
    assert UnionImages({"b": b, "a": a}).fingerprint() != whole.fingerprint()  # another order: other cache rows
    assert UnionImages({"a": a}).fingerprint() == a.fingerprint()
    write_images(tmp_path / "b" / "fox", 3, size=48, seed=9)  # the same names, other files
    changed = UnionImages({"a": a, "b": open_images(str(tmp_path / "b"))})
    assert changed.fingerprint() != whole.fingerprint()
    mixed = UnionImages({"a": a, "subset": SubsetImages(b, [0, 1])})  # a part without lines: names and fingerprints
    assert mixed.fingerprint_lines() is None and mixed.fingerprint() != a.fingerprint()


def test_flat_and_nested_folders_are_unlabelled(tmp_path):
    write_images(tmp_path / "flat", 3)
    write_images(tmp_path / "nested" / "a" / "deep", 2)
    write_images(tmp_path / "nested", 2, prefix="top")
    flat, nested = open_images(str(tmp_path / "flat")), open_images(str(tmp_path / "nested"))
    assert flat.labels is None and len(flat) == 3
    assert nested.labels is None and len(nested) == 4
    assert IndexedViews(nested, {"x": original_view(8)})[3]["label"] == -1


def test_seeded_subset_is_fixed_and_renumbered(labelled_folder):
    source = open_images(str(labelled_folder))
    a, b = seeded_subset(source, 5, seed=1), seeded_subset(source, 5, seed=1)
    assert a.positions == b.positions and len(a) == 5
    assert a.labels == [source.labels[p] for p in a.positions]
    assert a.fingerprint() != seeded_subset(source, 5, seed=2).fingerprint()
    assert seeded_subset(source, None, 0) is source


def test_missing_path_and_empty_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_images(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        open_images(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="data.download=true"):
        open_images("cifar10:train", root=str(tmp_path))
    with pytest.raises(DataError, match="unknown split"):
        open_images("cifar10:unlabeled", root=str(tmp_path))


def test_corrupt_image_error_names_the_file_or_is_skipped(labelled_folder):
    bad = labelled_folder / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    source = open_images(str(labelled_folder))
    position = source.paths.index(bad)
    with pytest.raises(DataError) as info:
        source.load(position)
    assert str(bad) in str(info.value) and "skip_corrupt" in str(info.value)
    skipping = open_images(str(labelled_folder), skip_corrupt=True)
    assert len(skipping) == 12 and skipping.skipped == [bad]


def test_original_view_is_deterministic_unnormalised_and_keeps_small_images_whole():
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 100))  # blue strip at the left edge, cut by a centre crop
    view = original_view(64, crop_pct=0.875)
    out = view(image)
    assert out.shape == (3, 64, 64) and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, view(image))
    assert out[2].max() < 0.1  # the blue strip was cropped away
    small = Image.new("RGB", (32, 32), (0, 0, 255))
    small.paste((255, 0, 0), (0, 0, 2, 32))
    kept = original_view(32)(small)
    assert kept[0, :, 0].min() > 0.9  # native-size images are not cropped: the red border survives


def test_augmented_view_shape_range_and_randomness():
    image = Image.effect_noise((120, 90), 60).convert("RGB")
    view = augmented_view(48, AugConfig())
    a, b = view(image), view(image)
    assert a.shape == (3, 48, 48) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, b)
    assert augmented_view(48, AugConfig(recipe="none"))(image).shape == (3, 48, 48)
