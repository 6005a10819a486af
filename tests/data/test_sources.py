"""Data beyond folders: a text file listing image paths gives the folder's images and labels in a fixed order and
fingerprints its content, not its location (WebDataset shards: test_shards.py, where a list run, a shard run and the
folder run train the same student)."""

import shutil

import numpy as np
import pytest

from ssdistill.data.datasets import FolderImages, ListImages, open_images
from ssdistill.errors import DataError

from conftest import DEMO_DATA, write_tar


def test_a_path_list_gives_the_listed_images_with_their_classes(tmp_path):
    folder = FolderImages(DEMO_DATA / "val")
    listing = tmp_path / "val.txt"
    lines = ["# demo val"] + [f"{p}\t{folder.classes[c]}" for p, c in zip(folder.paths, folder.labels)]
    listing.write_text("\n".join(lines) + "\n")
    source = open_images(str(listing))
    assert isinstance(source, ListImages) and len(source) == len(folder) and source.labels == folder.labels
    assert source.classes == folder.classes
    relative = tmp_path / "rel.txt"  # unlabelled, relative to the list's folder
    (tmp_path / "img").mkdir()
    shutil.copy(folder.paths[0], tmp_path / "img" / "a.jpg")
    relative.write_text("img/a.jpg\n")
    assert open_images(str(relative)).labels is None and np.array_equal(np.asarray(open_images(str(relative)).load(0)), np.asarray(folder.load(0)))


def test_bad_lists_are_refused_in_one_line(tmp_path):
    listing = tmp_path / "bad.txt"
    listing.write_text("img/nowhere.jpg\n")
    with pytest.raises(DataError, match=r"bad.txt line 1: img/nowhere.jpg not found"):
        open_images(str(listing))
    folder = FolderImages(DEMO_DATA / "val")
    listing.write_text(f"{folder.paths[0]}\tcat\n{folder.paths[1]}\n")
    with pytest.raises(DataError, match="some lines name a class and some do not"):
        open_images(str(listing))


def _labelled_list(tmp_path, name="list.txt", corrupt_at=None):
    """A list of 6 generated images in classes a/b (alternating); with ``corrupt_at`` that line's file is not an image."""
    from conftest import write_images

    paths = write_images(tmp_path / "img", 6)
    if corrupt_at is not None:
        paths[corrupt_at].write_bytes(b"\xff\xd8\xff\xe0 truncated")
    listing = tmp_path / name
    listing.write_text("".join(f"img/{p.name}\t{'ab'[i % 2]}\n" for i, p in enumerate(paths)))
    return listing, paths


def test_a_list_skips_unreadable_images_with_labels_aligned_and_its_own_fingerprint(tmp_path, caplog):
    listing, paths = _labelled_list(tmp_path, corrupt_at=2)
    strict = open_images(str(listing))
    with pytest.raises(DataError, match=r"cannot read image .*img002.jpg .*set data.skip_corrupt=true to skip unreadable images"):
        strict.load(2)
    skipping = open_images(str(listing), skip_corrupt=True)
    assert isinstance(skipping, ListImages) and skipping.skipped == [paths[2]] and "img002.jpg" in caplog.text
    assert len(skipping) == 5 and skipping.paths == [p for i, p in enumerate(paths) if i != 2]
    assert skipping.classes == ["a", "b"] and skipping.labels == [0, 1, 1, 0, 1]  # line 3 (class a) left out
    assert [skipping.load(i).size for i in range(5)] == [(40, 40)] * 5
    # the teacher cache keys on the fingerprint: it changes with what is skipped, and equals the list without that line
    assert skipping.fingerprint() != strict.fingerprint()
    without = tmp_path / "without.txt"
    without.write_text("".join(line for i, line in enumerate(listing.read_text().splitlines(True)) if i != 2))
    assert open_images(str(without)).fingerprint() == skipping.fingerprint()


LIST_CASES = [  # (list text, the one-line message after the list's path)
    ("img/img000.jpg\ta\nimg/img001.jpg\tb\textra\n", " line 2 has 3 tab-separated columns; each line is `path` or `path<TAB>class`"),
    ("img/img000.jpg\ta\nimg/img001.jpg\t  \n", " line 2 has a tab but no class after it; each line is `path` or `path<TAB>class`"),
    (
        "# two\nimg/img000.jpg\ta\n\nimg/img001.jpg\tb\n./img/img000.jpg\tb\n",
        " lines 2 and 5 both list ./img/img000.jpg; list each image once (a repeated image counts twice in training and in the k-NN)",
    ),
    ("img/img000.jpg a\n", " line 1: img/img000.jpg a not found; separate the path and its class with a TAB, not spaces"),
    (
        "img/img000.jpg\ta\nimg/img001.jpg\n",
        ": some lines name a class and some do not (line 2 names none); give every line a class (path<TAB>class) or none",
    ),
    ("\tcat\n", " line 1 has a class but no path; each line is `path` or `path<TAB>class`"),
    ("img\tcat\n", " line 1: img is a folder, not an image; list image files"),
]


@pytest.mark.parametrize("text, message", LIST_CASES, ids=["three columns", "empty class", "duplicate", "space", "mixed", "no path", "folder"])
def test_malformed_list_lines_are_refused_with_their_line_number(tmp_path, text, message):
    _labelled_list(tmp_path)
    listing = tmp_path / "bad.txt"
    listing.write_text(text)
    with pytest.raises(DataError) as info:
        open_images(str(listing))
    assert str(info.value) == f"{listing}{message}"


def test_a_list_in_another_format_is_named_as_a_file(tmp_path):
    (tmp_path / "train.csv").write_text("img/a.jpg,cat\n")
    with pytest.raises(DataError) as info:
        open_images(str(tmp_path / "train.csv"))
    assert str(info.value) == (
        f"data path {tmp_path / 'train.csv'} is a file, not a folder; give a folder of images, a .txt list of "
        "images (`path` or `path<TAB>class` lines) or wds: shards"
    )


def test_list_encodings_and_line_endings(tmp_path):
    """Windows line endings and a UTF-8 byte-order mark are accepted; a list that is not UTF-8 names its line."""
    _labelled_list(tmp_path)
    listing = tmp_path / "win.txt"
    listing.write_bytes("\ufeffimg/img000.jpg\ta\r\nimg/img001.jpg\tb\r\n".encode("utf-8"))
    source = open_images(str(listing))
    assert source.classes == ["a", "b"] and source.labels == [0, 1] and source.names == ["img/img000.jpg", "img/img001.jpg"]
    listing.write_bytes("img/img000.jpg\ta\nimg/img001.jpg\tcafé\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"win.txt line 2 is not UTF-8 text; save the list as UTF-8"):
        open_images(str(listing))


def test_an_empty_class_folder_keeps_the_split_labelled_and_is_named(tmp_path, caplog):
    from conftest import write_images

    for name in ("ant", "cat"):
        write_images(tmp_path / "train" / name, 2)
    (tmp_path / "train" / "bee").mkdir()
    source = open_images(str(tmp_path / "train"))
    assert source.classes == ["ant", "bee", "cat"] and source.labels == [0, 0, 2, 2]
    assert "class folder(s) bee/ under" in caplog.text and "hold no images" in caplog.text
    write_images(tmp_path / "nested" / "ant" / "a" / "b", 2)  # images only in sub-sub-folders still count
    write_images(tmp_path / "nested" / "cat" / "c", 1)
    assert open_images(str(tmp_path / "nested")).labels == [0, 0, 1]


def test_a_folder_holding_the_splits_is_refused(tmp_path):
    from conftest import write_images

    for split in ("train", "val"):
        write_images(tmp_path / "data" / split / "cat", 1)
    with pytest.raises(DataError) as info:
        open_images(str(tmp_path / "data"))
    data = tmp_path / "data"
    assert str(info.value) == (
        f"{data} holds the splits train/, val/ rather than class folders; point data.train at {data / 'train'} and data.val at {data / 'val'}"
    )
    write_images(tmp_path / "data" / "zebra", 1)  # one folder that is no split name: its sub-folders are classes
    assert open_images(str(tmp_path / "data")).classes == ["train", "val", "zebra"]


def test_hidden_files_dangling_symlinks_and_folders_named_like_images_are_left_out(tmp_path, caplog):
    from conftest import write_images

    write_images(tmp_path / "d" / "cat", 2)
    write_images(tmp_path / "d" / "cat" / ".thumbnails", 1)
    (tmp_path / "d" / "cat" / "._img000.jpg").write_bytes(b"\x00\x05\x16\x07")  # a macOS resource fork
    (tmp_path / "d" / "cat" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (tmp_path / "d" / "cat" / "album.jpg").mkdir()
    (tmp_path / "d" / "cat" / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")  # PIL cannot read it: named
    write_images(tmp_path / "d" / "__MACOSX" / "cat", 1)
    write_images(tmp_path / "d" / "dog", 1, prefix="DOG")
    (tmp_path / "d" / "dog" / "DOG000.jpg").rename(tmp_path / "d" / "dog" / "DOG000.JPEG")
    source = open_images(str(tmp_path / "d"))
    assert source.classes == ["cat", "dog"]
    assert [p.name for p in source.paths] == ["img000.jpg", "img001.jpg", "DOG000.JPEG"]
    assert "symlink(s) to missing files" in caplog.text and "gone.jpg" in caplog.text
    assert "left out 1 photo(s) in a format PIL cannot read (convert them to JPEG or PNG)" in caplog.text and "IMG_0001.HEIC" in caplog.text


def test_skip_corrupt_remembers_each_source_by_one_short_digest(tmp_path, monkeypatch, caplog):
    """Which images of a source are unreadable is remembered per process (a split is opened several times a run) under
    one digest computed file by file: not the repr of a list of per-image keys, which for shards repeated every shard's
    path and size once per image (gigabytes on a large set). The same images are decoded and warned about once; a
    changed file is decoded again."""
    import os

    import ssdistill.data.datasets as datasets
    import ssdistill.data.shards as shards

    from conftest import write_images

    identities, real = [], datasets.keep_readable
    for module in (datasets, shards):
        monkeypatch.setattr(module, "keep_readable", lambda identity, *rest: identities.append(identity) or real(identity, *rest))
    listing, paths = _labelled_list(tmp_path, corrupt_at=2)
    members = {}
    for i, path in enumerate(write_images(tmp_path / "for-shards", 4)):
        members[f"k{i}.jpg"] = b"not an image" if i == 1 else path.read_bytes()
    write_tar(tmp_path / "s-0.tar", dict(list(members.items())[:2]))
    write_tar(tmp_path / "s-1.tar", dict(list(members.items())[2:]))
    for spec, decoded in ((str(tmp_path / "img"), True), (str(listing), False), (f"wds:{tmp_path}/s-{{0..1}}.tar", True)):
        caplog.clear()
        assert len(open_images(spec, skip_corrupt=True).skipped) == 1
        assert ("skipped 1 unreadable" in caplog.text) == decoded  # the list holds the folder's files in its order
        caplog.clear()
        assert len(open_images(spec, skip_corrupt=True).skipped) == 1 and "skipped" not in caplog.text  # remembered
    assert all(isinstance(identity, str) and len(identity) == 40 for identity in identities)
    assert len(set(identities)) == 2
    os.utime(paths[2], ns=(0, 0))  # the unreadable file changed (here: its modification time)
    caplog.clear()
    assert len(open_images(str(listing), skip_corrupt=True).skipped) == 1 and "skipped 1 unreadable" in caplog.text


def test_split_names_have_one_definition(tmp_path):
    """data.datasets refuses a folder of splits and the export names a data set after a split's parent folder with the
    same names, among them STL-10's unlabeled/ and a holdout/ split."""
    from ssdistill import export_config
    from ssdistill.data import datasets

    from conftest import write_images

    assert export_config.SPLIT_NAMES is datasets.SPLIT_NAMES
    assert export_config.dataset_name("/x/imagenette/holdout") == ("imagenette", "holdout")
    assert export_config.dataset_name("/x/stl/unlabeled") == ("stl", "unlabeled")
    for split in ("train", "test", "unlabeled"):
        write_images(tmp_path / "stl" / split / "cat", 1)
    with pytest.raises(DataError) as info:
        open_images(str(tmp_path / "stl"))
    stl = tmp_path / "stl"
    assert str(info.value) == (
        f"{stl} holds the splits test/, train/, unlabeled/ rather than class folders; point data.train at {stl / 'train'} "
        f"and data.val at {stl / 'test'}"
    )
    write_images(tmp_path / "only" / "unlabeled" / "cat", 1)
    with pytest.raises(DataError, match=r"holds the splits unlabeled/ rather than class folders; point data.train at .*unlabeled$"):
        open_images(str(tmp_path / "only"))


def test_shard_member_extensions_do_not_shadow_image_file_extensions():
    from ssdistill.data import datasets, images

    assert datasets.IMAGE_EXTENSIONS is images.IMAGE_EXTENSIONS and ".png" in datasets.IMAGE_EXTENSIONS
    assert datasets.SHARD_IMAGE_MEMBERS == tuple(extension[1:] for extension in images.IMAGE_EXTENSIONS)
