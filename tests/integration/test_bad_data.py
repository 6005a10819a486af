"""Bad data costs the user one line, through the real CLI: a list with a three-column line, data.train pointed at the
folder that holds train/ and val/, and an image too large to decode safely each exit with code 2, print exactly one
``error: ...`` line (no traceback) and leave no run directory behind; with data.skip_corrupt=true a list holding an
unreadable image trains to the end and records the skipped file in results.json."""

import io
import json
import struct
import tarfile
import zlib

import pytest
import yaml

from ssdistill.cli import main

from conftest import DEMO_DATA
from integration.common import tiny_config


def _class_folders(root, per_class: int) -> list:
    """``root/<class>/`` for each of the demo's 10 classes, ``per_class`` symlinked demo training images in each."""
    paths = []
    for folder in sorted(p for p in (DEMO_DATA / "train").iterdir() if p.is_dir()):
        (root / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:per_class]:
            (root / folder.name / image.name).symlink_to(image)
            paths.append(root / folder.name / image.name)
    return paths


def huge_png(path, width: int = 10_000, height: int = 9_000) -> None:
    """A valid 1-bit greyscale PNG of 90 million pixels (over PIL's 89,478,485-pixel limit) in a few kilobytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer, row = zlib.compressobj(), b"\x00" + bytes(width // 8)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    t = tmp_path_factory.mktemp("bad_data")
    config = tiny_config(t)
    config["cache"] = {"dir": str(t / "cache")}
    config["data"].update({"val": None, "train_subset": None})
    (t / "recipe.yaml").write_text(yaml.safe_dump(config))
    images = _class_folders(t / "folder", 3)
    lines = [f"{p}\t{p.parent.name}" for p in images]
    lines[4] += "\textra"
    (t / "three_columns.txt").write_text("\n".join(lines) + "\n")
    (t / "dataset").mkdir()
    for split in ("train", "val"):
        (t / "dataset" / split).symlink_to(DEMO_DATA / split)
    _class_folders(t / "huge", 3)
    huge_png(t / "huge" / "n01440764" / "zz_huge.png")
    good = [f"{p}\t{p.parent.name}" for p in images]
    (t / "duplicate.txt").write_text("\n".join([*good[:5], good[1], *good[5:]]) + "\n")
    (t / "no_class.txt").write_text("\n".join([*good[:3], str(images[3]) + "\t ", *good[4:]]) + "\n")
    (t / "mixed.txt").write_text("\n".join([good[0], str(images[1]), *good[2:]]) + "\n")
    (t / "spaces.txt").write_text("\n".join([f"{p} {p.parent.name}" for p in images]) + "\n")
    (t / "latin1.txt").write_bytes(("\n".join(good[:2]) + "\n" + str(images[2]) + "\tcaf\u00e9\n").encode("latin-1"))
    (t / "images.csv").write_text("\n".join(str(p) for p in images) + "\n")
    shard = t / "shard-000000.tar"
    with tarfile.open(shard, "w") as tar:
        for key, label in (("k0", b"0"), ("k1", b"cat")):
            tar.add(images[0], arcname=f"{key}.jpg")
            info = tarfile.TarInfo(f"{key}.cls")
            info.size = len(label)
            tar.addfile(info, io.BytesIO(label))
    return t


CASES = [  # (case, overrides after `distill --config recipe.yaml`, the whole error line)
    (
        "list line with three columns",
        ["data.train={t}/three_columns.txt"],
        "error: {t}/three_columns.txt line 5 has 3 tab-separated columns; each line is `path` or `path<TAB>class`",
    ),
    (
        "train holds the splits",
        ["data.train={t}/dataset"],
        "error: {t}/dataset holds the splits train/, val/ rather than class folders; point data.train at {t}/dataset/train "
        "and data.val at {t}/dataset/val",
    ),
    (
        "image too large",
        ["data.train={t}/huge"],
        "error: image {t}/huge/n01440764/zz_huge.png is too large to decode safely (90,000,000 pixels, over PIL's limit of "
        "89,478,485); downscale it or remove it, or set data.skip_corrupt=true to skip unreadable images",
    ),
    ("list naming an image twice", ["data.train={t}/duplicate.txt"], "error: {t}/duplicate.txt lines 2 and 6 both list "),
    (
        "list line with a tab and no class",
        ["data.train={t}/no_class.txt"],
        "error: {t}/no_class.txt line 4 has a tab but no class after it; each line is `path` or `path<TAB>class`",
    ),
    (
        "list with and without classes",
        ["data.train={t}/mixed.txt"],
        "error: {t}/mixed.txt: some lines name a class and some do not (line 2 names none); give every line a class (path<TAB>class) or none",
    ),
    ("list separating the class with a space", ["data.train={t}/spaces.txt"], "error: {t}/spaces.txt line 1: "),
    ("list not in UTF-8", ["data.train={t}/latin1.txt"], "error: {t}/latin1.txt line 3 is not UTF-8 text; save the list as UTF-8"),
    ("data path that is a file but no list", ["data.train={t}/images.csv"], "error: data path {t}/images.csv is a file, not a folder"),
    ("shard whose .cls is not a number", ["data.train=wds:{t}/shard-000000.tar"], "error: sample k1 in shard "),
]


@pytest.mark.parametrize("case, overrides, expected", CASES, ids=[case for case, _, _ in CASES])
def test_bad_data_is_one_line_and_leaves_nothing_behind(workdir, capsys, case, overrides, expected):
    t = str(workdir)
    with pytest.raises(SystemExit) as exit_code:
        main(["distill", "--config", f"{t}/recipe.yaml", *[o.format(t=t) for o in overrides]])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert exit_code.value.code == 2, err
    assert len(errors) == 1 and errors[0].startswith(expected.format(t=t)), err
    assert not any("Traceback" in line for line in err), err
    assert not (workdir / "runs").exists() or not any((workdir / "runs").iterdir())


def test_a_list_with_an_unreadable_image_trains_with_skip_corrupt_and_records_it(tmp_path):
    """One training epoch of a few batches on a 31-line list whose line 7 is a truncated JPEG."""
    images = _class_folders(tmp_path / "folder", 3)
    broken = tmp_path / "folder" / "n01440764" / "zz_broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    lines = [f"{p}\t{p.parent.name}" for p in images]
    lines.insert(6, f"{broken}\tn01440764")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    config = tiny_config(tmp_path, data={"val": None, "train_subset": None}, trainer={"epochs": 1}, run={"name": "skip"})
    config["cache"] = {"dir": str(tmp_path / "cache")}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(config))
    main(["distill", "--config", str(tmp_path / "recipe.yaml"), f"data.train={tmp_path / 'train.txt'}", "data.skip_corrupt=true"])
    results = json.loads((tmp_path / "runs" / "skip" / "results.json").read_text())
    assert results["data"]["skipped_unreadable"] == [str(broken)]
    assert results["data"]["train_size"] == 30
