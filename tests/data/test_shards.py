"""WebDataset shards (``wds:``): local, over HTTP from a server on 127.0.0.1, and from a ``pipe:`` command. Shards are
written from the demo data in the folder's order (webdataset's own writer, or tarfile for broken ones); a remote shard
is downloaded once into <data.root>/wds-cache and read in place like a local one, so sample i is the same key, the
fingerprint equals the local copy's, and a run trains to the folder run's student, weight for weight. Labels come from
.cls, .json or .txt members; bad shards, labels and downloads are refused in one line."""

import contextlib
import hashlib
import http.server
import os
import shutil
import socket
import threading

import numpy as np
import pytest
import torch

from ssdistill import distill
from ssdistill.data.datasets import FolderImages, ShardImages, open_images, seeded_subset
from ssdistill.errors import DataError

from conftest import DEMO_DATA, write_images, write_tar
from integration.common import tiny_config


def write_shards(folder: FolderImages, out, per_shard: int, name: str, label: str = "cls", pattern: str = "%04d") -> str:
    """WebDataset shards of ``folder`` in its order: <key>.jpg (the file's bytes) and its class as <key>.cls (the
    index) or <key>.txt (the class name); the ``wds:`` spec that reads them."""
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(out / f"{name}-{pattern}.tar"), maxcount=per_shard, verbose=0) as sink:
        for i, path in enumerate(folder.paths):
            value = folder.labels[i] if label == "cls" else folder.classes[folder.labels[i]]
            sink.write({"__key__": f"{folder.classes[folder.labels[i]]}_{path.stem}", "jpg": path.read_bytes(), label: value})
    count = len(list(out.glob(f"{name}-*.tar")))
    last = pattern % (count - 1)
    return f"wds:{out}/{name}-{{{pattern % 0}..{last}}}.tar"


class Server:
    """An HTTP server on 127.0.0.1 (port 0) in a thread, serving ``folder``; ``requests`` lists the paths asked for."""

    def __init__(self, folder) -> None:
        requests = self.requests = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextlib.contextmanager
def serving(folder):
    server = Server(folder)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Requests to 127.0.0.1 go straight to the test's server, whatever proxy the machine sets."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The demo train split as 4 shards with .cls labels and as 2 shards with .txt class names (served over HTTP in
    the tests), the val split as 1 shard."""
    root = tmp_path_factory.mktemp("shards")
    train, val = FolderImages(DEMO_DATA / "train"), FolderImages(DEMO_DATA / "val")
    served = root / "served"
    write_shards(train, served, 500, "shard", label="txt", pattern="%d")
    return {"train": write_shards(train, root, 300, "train"), "val": write_shards(val, root, 1000, "val"), "root": root, "served": served}


def test_shards_give_the_folder_images_labels_and_a_location_free_fingerprint(shards, tmp_path):
    folder, source = FolderImages(DEMO_DATA / "train"), open_images(shards["train"])
    assert isinstance(source, ShardImages) and len(source.shards) == 4  # 1,000 images, 300 a shard
    assert len(source) == len(folder) and source.labels == folder.labels
    for i in (0, 299, 300, 999):  # across shard boundaries: the same pixels as the folder's file
        assert np.array_equal(np.asarray(source.load(i)), np.asarray(folder.load(i)))
        assert source.size(i) == folder.size(i)
    assert source.keys[0] == f"{folder.classes[0]}_{folder.paths[0].stem}"
    moved = tmp_path / "elsewhere"
    shutil.copytree(shards["root"], moved)
    assert open_images(shards["train"].replace(str(shards["root"]), str(moved))).fingerprint() == source.fingerprint()
    assert source.fingerprint() != folder.fingerprint()


def test_http_shards_are_downloaded_once_into_the_cache_and_read_as_the_local_copy(shards, tmp_path):
    folder = FolderImages(DEMO_DATA / "train")
    local = open_images(f"wds:{shards['served']}/shard-{{0..1}}.tar")
    assert local.classes == folder.classes and local.labels == folder.labels  # .txt class names, in sorted name order
    with serving(shards["served"]) as server:
        spec = f"wds:{server.url}/shard-{{0..1}}.tar"
        remote = open_images(spec, root=str(tmp_path / "root"))
        again = open_images(spec, root=str(tmp_path / "root"))  # a second open (or run) reads the cache
    assert server.requests == ["/shard-0.tar", "/shard-1.tar"]
    url = f"{server.url}/shard-1.tar"
    cached = tmp_path / "root" / "wds-cache" / hashlib.sha1(url.encode()).hexdigest()[:16] / "shard-1.tar"
    assert remote.shards[1] == again.shards[1] == cached and cached.read_bytes() == (shards["served"] / "shard-1.tar").read_bytes()
    assert sorted(p.name for p in cached.parent.iterdir()) == [".lock", "shard-1.tar"]  # no temporary file left
    assert remote.fingerprint() == local.fingerprint() and remote.labels == local.labels and remote.keys == local.keys
    assert np.array_equal(np.asarray(remote.load(700)), np.asarray(folder.load(700)))


def test_two_processes_opening_one_remote_shard_download_it_once(shards, tmp_path):
    """Two openers at once (DDP ranks, runs started together): the second waits on the cache folder's lock and reads the
    first one's download. Threads stand in for processes: each opens the lock file itself, and flock locks conflict
    between separate opens."""
    import time

    from ssdistill.data.shards import cached_shard

    data = (shards["served"] / "shard-0.tar").read_bytes()
    requests = []

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            time.sleep(0.5)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/shard-0.tar"
    found = []
    try:
        openers = [threading.Thread(target=lambda: found.append(cached_shard(url, tmp_path))) for _ in range(2)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert requests == ["/shard-0.tar"] and len(found) == 2 and found[0] == found[1] and found[0].read_bytes() == data


def test_a_pipe_command_shard_is_cached_and_matches_the_local_shard(shards, tmp_path):
    served = shards["served"]
    local = open_images(f"wds:{served}/shard-{{0..1}}.tar")
    piped = open_images(f"wds:pipe:cat {served}/shard-{{0..1}}.tar", root=str(tmp_path))
    assert [p.name for p in piped.shards] == ["shard-0.tar", "shard-1.tar"] and all(tmp_path in p.parents for p in piped.shards)
    assert piped.fingerprint() == local.fingerprint() and piped.labels == local.labels
    assert piped._name(0) == f"sample {piped.keys[0]} in shard pipe:cat {served}/shard-0.tar"  # messages name the command


def test_training_on_local_and_http_shards_and_on_a_list_matches_the_folder(shards, tmp_path):
    """Same images in the same order, same seed: the folder run, the local-shard run (two loader workers reading the
    shards in place), the run on shards served over HTTP on 127.0.0.1 (.txt class names, matched to data.val's class
    folders by name) and the list run train the same student, tensor for tensor, and so the same k-NN."""
    folder = FolderImages(DEMO_DATA / "train")
    listing = tmp_path / "train.txt"
    listing.write_text("\n".join(f"{p}\t{folder.classes[c]}" for p, c in zip(folder.paths, folder.labels)) + "\n")
    scores, students, fingerprints = {}, {}, {}
    with serving(shards["served"]) as server:
        runs = (
            ("folder", str(DEMO_DATA / "train"), str(DEMO_DATA / "val"), 0),
            ("wds", shards["train"], shards["val"], 2),
            ("http", f"wds:{server.url}/shard-{{0..1}}.tar", str(DEMO_DATA / "val"), 0),
            ("list", str(listing), str(DEMO_DATA / "val"), 0),
        )
        for name, train, val, workers in runs:
            # one teacher weights file for the runs (tiny_config writes it once under tmp_path)
            data = {"train": train, "val": val, "num_workers": workers, "root": str(tmp_path / "root")}
            config = tiny_config(tmp_path, data=data, trainer={"epochs": 2}, run={"name": name})
            assert config["trainer"]["seed"] == 3
            results = distill(config, quiet=True)
            scores[name], fingerprints[name] = results["knn"]["student"]["top1"], results["data"]["train_fingerprint"]
            assert results["data"]["train"] == train and results["data"]["train_size"] == 64
            state = torch.load(tmp_path / "runs" / name / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
            students[name] = {k: v for k, v in state.items() if k.startswith("student.")}
    assert server.requests == ["/shard-0.tar", "/shard-1.tar"]  # each shard downloaded once for the whole run
    for name in ("wds", "http", "list"):
        assert students[name].keys() == students["folder"].keys()
        assert all(torch.equal(students[name][k], students["folder"][k]) for k in students["folder"]), name
        assert scores[name] == scores["folder"], name
    local_copy = open_images(f"wds:{shards['served']}/shard-{{0..1}}.tar")
    assert fingerprints["http"] == seeded_subset(local_copy, 64, seed=3).fingerprint()  # not where the cache is


def test_download_failures_are_one_line_and_leave_nothing_in_the_cache(shards, tmp_path):
    root = tmp_path / "root"
    with serving(shards["served"]) as server:
        with pytest.raises(DataError) as info:
            open_images(f"wds:{server.url}/shard-{{0..2}}.tar", root=str(root))
    assert str(info.value) == (
        f"cannot download shard {server.url}/shard-2.tar (HTTP 404 File not found); check the URL and that the server is reachable"
    )
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(
        DataError,
        match=rf"^cannot download shard http://127.0.0.1:{port}/a-0.tar \(.*Connection refused\); "
        r"check the URL and that the server is reachable$",
    ):
        open_images(f"wds:http://127.0.0.1:{port}/a-0.tar", root=str(root))
    with pytest.raises(DataError) as info:
        open_images(f"wds:pipe:cat {tmp_path}/nowhere.tar", root=str(root))
    assert str(info.value) == (
        f"shard command 'cat {tmp_path}/nowhere.tar' failed (exit status 1: cat: {tmp_path}/nowhere.tar: No such file or "
        "directory); fix the command: it must write one tar shard to its standard output"
    )
    cached = [p for p in (root / "wds-cache").rglob("*") if p.is_file() and p.name != ".lock"]
    assert sorted(p.name for p in cached) == ["shard-0.tar", "shard-1.tar"]  # the shards before the missing one


def test_a_cache_that_cannot_be_written_is_one_line(shards, tmp_path, monkeypatch):
    import errno

    from ssdistill.data import shards as module

    (tmp_path / "file").write_text("not a folder")
    spec = f"wds:pipe:cat {shards['served']}/shard-0.tar"
    folder = tmp_path / "file" / "wds-cache" / hashlib.sha1(spec[4:].encode()).hexdigest()[:16]
    with pytest.raises(DataError) as info:
        open_images(spec, root=str(tmp_path / "file"))
    assert str(info.value) == f"cannot create the shard cache folder {folder} (Not a directory); set data.root to a writable folder"

    def full(url, temp):
        temp.write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(module, "_run_command", full)
    folder = tmp_path / "wds-cache" / hashlib.sha1(spec[4:].encode()).hexdigest()[:16]
    with pytest.raises(DataError) as info:
        open_images(spec, root=str(tmp_path))
    assert str(info.value) == (
        f"cannot write shard {spec[4:]} into the shard cache {folder} (No space left on device); free space "
        "there or set data.root to a writable folder with room"
    )
    assert [p.name for p in folder.iterdir()] == [".lock"]


def test_a_download_cut_short_is_never_trusted(shards, tmp_path):
    """A body shorter than its Content-Length, or a command that writes half a tar and exits 0, is refused and leaves
    no shard; the download after it (a killed one's temporary file lying beside it) is whole."""
    data = (shards["served"] / "shard-0.tar").read_bytes()
    short = {"serve": data[: len(data) // 2]}

    class Cut(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(short["serve"])

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Cut)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/shard-0.tar"
    folder = tmp_path / "wds-cache" / hashlib.sha1(url.encode()).hexdigest()[:16]
    try:
        with pytest.raises(DataError, match=rf"^cannot download shard {url} \(.*\); check the URL and that the server is reachable$"):
            open_images(f"wds:{url}", root=str(tmp_path))
        assert [p.name for p in folder.iterdir()] == [".lock"]
        (folder / ".shard-0.tar.99999.part").write_bytes(data[:1000])  # what a killed download leaves
        short["serve"] = data
        source = open_images(f"wds:{url}", root=str(tmp_path))
        assert len(source) == 500 and sorted(p.name for p in folder.iterdir()) == [".lock", "shard-0.tar"]
    finally:
        httpd.shutdown()
        httpd.server_close()
    (tmp_path / "half.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as info:
        open_images(f"wds:pipe:cat {tmp_path}/half.tar", root=str(tmp_path))
    assert str(info.value) == (
        f"cannot index shard pipe:cat {tmp_path}/half.tar (unexpected end of data); shards must be uncompressed tar files of WebDataset samples"
    )
    assert not list((tmp_path / "wds-cache").glob("*/half.tar"))


def test_shard_patterns_that_cannot_be_read_are_refused_in_one_line(tmp_path):
    with pytest.raises(DataError) as info:
        open_images(f"wds:{tmp_path}/missing-{{0000..0001}}.tar")
    assert str(info.value) == (
        f"wds:{tmp_path}/missing-{{0000..0001}}.tar: shard {tmp_path}/missing-0000.tar not found; give local "
        ".tar shards, http(s):// URLs or pipe:<command> (brace patterns allowed)"
    )
    with pytest.raises(DataError) as info:
        open_images("wds:s3://bucket/train-{000..009}.tar")
    assert str(info.value) == (
        "wds:s3://bucket/train-{000..009}.tar: shards cannot be read from s3:// URLs; give local .tar shards, http(s):// URLs "
        "or pipe:<command> (brace patterns allowed), for example wds:pipe:aws s3 cp s3://bucket/train-{000..009}.tar -"
    )
    with pytest.raises(DataError) as info:
        open_images("wds:/data/${SSDISTILL_TEST_UNSET}/a-{0..1}.tar")
    assert str(info.value) == (
        "wds:/data/${SSDISTILL_TEST_UNSET}/a-{0..1}.tar: ${SSDISTILL_TEST_UNSET} reads the environment "
        "variable WDS_SSDISTILL_TEST_UNSET, which is not set; set it or write the value into the pattern"
    )
    write_tar(tmp_path / "text-0.tar", {"k0.txt": b"cat", "k0.json": b"{}"})
    with pytest.raises(
        DataError,
        match=r"^wds:.*text-0.tar holds no images \(jpg, jpeg, .*members\); each sample needs an "
        r"image member such as <key>.jpg$",
    ):
        open_images(f"wds:{tmp_path}/text-0.tar")
    (tmp_path / "notes.tar").write_bytes(b"<html>not a tar</html>")
    with pytest.raises(DataError, match=rf"^cannot index shard {tmp_path}/notes.tar \(.*\); shards must be uncompressed tar files"):
        open_images(f"wds:file://{tmp_path}/notes.tar")


def test_shards_skip_unreadable_images_with_labels_aligned_and_their_own_fingerprint(tmp_path):
    paths = write_images(tmp_path / "img", 4)
    members = {}
    for i, path in enumerate(paths):
        members[f"k{i}.jpg"] = b"not an image" if i == 1 else path.read_bytes()
        members[f"k{i}.cls"] = str(i % 2).encode()
    write_tar(tmp_path / "s-0.tar", members)
    strict = open_images(f"wds:{tmp_path}/s-0.tar")
    with pytest.raises(DataError, match=r"cannot read image sample k1 in shard .*s-0.tar .*set data.skip_corrupt=true"):
        strict.load(1)
    skipping = open_images(f"wds:{tmp_path}/s-0.tar", skip_corrupt=True)
    assert skipping.keys == ["k0", "k2", "k3"] and skipping.labels == [0, 0, 1] and skipping.classes == ["0", "1"]
    assert skipping.skipped == [f"sample k1 in shard {tmp_path / 's-0.tar'}"]
    assert np.array_equal(np.asarray(skipping.load(1)), np.asarray(FolderImages(tmp_path / "img").load(2)))
    assert skipping.fingerprint() != strict.fingerprint()
    assert len(open_images(f"wds:{tmp_path}/s-0.tar")) == 4  # the shared shard index stays whole


def _labelled(tmp_path, labels: list[dict[str, bytes]], name: str = "l-0.tar") -> str:
    """A shard of len(labels) generated images, sample i with the label members labels[i]."""
    images = write_images(tmp_path / "img", len(labels))
    members = {}
    for i, (path, extra) in enumerate(zip(images, labels)):
        members[f"k{i}.jpg"] = path.read_bytes()
        members.update({f"k{i}.{ext}": data for ext, data in extra.items()})
    write_tar(tmp_path / name, members)
    return f"wds:{tmp_path}/{name}"


def test_labels_from_cls_json_and_txt_members(tmp_path):
    by_name = open_images(_labelled(tmp_path, [{"txt": b"zebra\n"}, {"txt": b"ant"}, {"txt": b"zebra"}], "t-0.tar"))
    assert by_name.classes == ["ant", "zebra"] and by_name.labels == [1, 0, 1]
    by_json = open_images(_labelled(tmp_path, [{"json": b'{"class": "dog", "url": "x"}'}, {"json": b'{"class": "cat"}'}], "j-0.tar"))
    assert by_json.classes == ["cat", "dog"] and by_json.labels == [1, 0]
    indexed = open_images(_labelled(tmp_path, [{"json": b'{"label": 2}'}, {"cls": b"0"}, {"json": b'{"cls": 1, "label": 1}'}], "i-0.tar"))
    assert indexed.classes == ["0", "1", "2"] and indexed.labels == [2, 0, 1]  # .cls and JSON integers are both indices
    # a sample's .cls comes first, then its .json label, then its .txt: a caption beside a .cls is not a class
    first = open_images(_labelled(tmp_path, [{"cls": b"1", "txt": b"a photo of a dog"}, {"cls": b"0", "json": b'{"label": "x"}'}], "p-0.tar"))
    assert first.labels == [1, 0]
    plain = open_images(_labelled(tmp_path, [{"json": b'{"url": "x"}'}, {}], "u-0.tar"))  # metadata only: unlabelled
    assert plain.labels is None and plain.classes == []


def test_class_names_that_look_like_captions_are_warned_about_once(tmp_path, caplog):
    captions = [{"txt": f"a photo of thing {i}".encode()} for i in range(19)] + [{"txt": b"a photo of thing 0"}]
    spec = _labelled(tmp_path, captions)
    assert len(open_images(spec).classes) == 19 and len(open_images(spec).classes) == 19
    assert (
        caplog.text.count("different class names") == 1
        and (
            f"{spec}: its 20 samples have 19 different class names; if the .txt / .json names are captions rather than classes, "
            "give the k-NN a labelled memory split (data.knn_train)"
        )
        in caplog.text
    )
    caplog.clear()
    open_images(_labelled(tmp_path, [{"txt": b"ab"[i % 2 : i % 2 + 1]} for i in range(20)], "classes-0.tar"))
    assert "different class names" not in caplog.text


LABEL_CASES = [  # (label members of samples k0, k1; the one-line message after "wds:<shard>" or "sample k1 in shard <shard>")
    ([{"cls": b"0"}, {"cls": b"cat\n"}], ": its .cls member holds 'cat', not a class index; .cls must hold a non-negative integer (0, 1, ...)"),
    (
        [{"cls": b"0"}, {"txt": b"cat"}],
        " is labelled by a class index and sample k1 in shard {shard} by a class name; label every sample the same way (.cls or a "
        ".json integer, or a .txt or .json class name)",
    ),
    (
        [{"txt": b"cat"}, {}],
        ": 1 of 2 samples have a label and sample k1 in shard {shard} has none; label every sample (.cls, .json or .txt) or none",
    ),
    (
        [{"txt": b"cat"}, {"json": b'{"label": 3, "class": "dog"}'}],
        ': its .json member gives two labels ("label": 3, "class": "dog"); keep one of the keys "label", "cls", "class"',
    ),
    (
        [{"txt": b"cat"}, {"json": b'{"label": 2.5}'}],
        ': its .json "label" holds 2.5, not a class; give a non-negative integer (a class index) or a class name',
    ),
    (
        [{"txt": b"cat"}, {"json": b"{label: 1}"}],
        ": its .json member is not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1)); fix "
        "the member or remove it",
    ),
    (
        [{"txt": b"cat"}, {"txt": b"a cat\non a mat"}],
        ": its .txt member holds more than one line ('a cat\\non a mat'); .txt must hold one class name",
    ),
    ([{"txt": b"cat"}, {"txt": b"  \n"}], ": its .txt member is empty; .txt must hold one class name"),
]


@pytest.mark.parametrize(
    "labels, message",
    LABEL_CASES,
    ids=["cls text", "index and name", "partly labelled", "two json keys", "json float", "bad json", "txt lines", "txt empty"],
)
def test_bad_labels_are_refused_in_one_line(tmp_path, labels, message):
    spec = _labelled(tmp_path, labels)
    shard = tmp_path / "l-0.tar"
    with pytest.raises(DataError) as info:
        open_images(spec)
    start = (
        f"{spec}: sample k0 in shard {shard}"
        if "labelled by" in message
        else (spec if message.startswith(": 1 of") else f"sample k1 in shard {shard}")
    )
    assert str(info.value) == start + message.format(shard=shard)


def test_skip_corrupt_leaves_out_a_broken_image_of_a_list_and_of_a_remote_shard_in_a_run(tmp_path):
    """data.skip_corrupt=true in a run: the broken image of a list and of a shard read over HTTP is left out and named in
    results.json; without it the run stops on a line that recommends the switch."""
    folder = FolderImages(DEMO_DATA / "train")
    picked = [folder.paths[i] for i in range(0, 1000, 50)]  # 20 images of 10 classes
    broken = tmp_path / "img" / "broken.jpg"
    broken.parent.mkdir()
    broken.write_bytes(b"\xff\xd8\xff\xe0 cut short")
    files = picked[:7] + [broken] + picked[7:]
    (tmp_path / "list.txt").write_text("".join(f"{p}\t{p.parent.name}\n" for p in files))
    served = tmp_path / "served"
    served.mkdir()
    members = {}
    for i, p in enumerate(files):
        members[f"s{i:02d}.jpg"], members[f"s{i:02d}.txt"] = p.read_bytes(), p.parent.name.encode()
    write_tar(served / "b-0.tar", members)
    with serving(served) as server:
        for name, spec, shown in (
            ("list", str(tmp_path / "list.txt"), str(broken)),
            ("http", f"wds:{server.url}/b-0.tar", f"sample s07 in shard {server.url}/b-0.tar"),
        ):
            data = {"train": spec, "val": None, "train_subset": None, "root": str(tmp_path / "root")}
            config = tiny_config(tmp_path, data=data, trainer={"epochs": 1}, run={"name": name})
            with pytest.raises(DataError, match=r"cannot read image .*set data.skip_corrupt=true to skip unreadable images$") as info:
                distill(config, quiet=True)
            assert shown in str(info.value)
            config = tiny_config(tmp_path, data={**data, "skip_corrupt": True}, trainer={"epochs": 1}, run={"name": name + "-skip"})
            results = distill(config, quiet=True)
            assert results["data"]["train_size"] == 20 and results["data"]["skipped_unreadable"] == [shown], name


def test_a_source_of_many_shards_keeps_few_files_open_and_closes_them_when_dropped(tmp_path, monkeypatch):
    """Shard files stay open for pread, but at most OpenShards.limit at once (least recently read closed first), and
    all are closed when the source is garbage-collected: a set of thousands of shards stays under the open-file limit."""
    import gc

    from ssdistill.data import shards

    monkeypatch.setattr(shards.OpenShards.__init__, "__defaults__", (3,))
    for name in ("a", "b"):
        write_images(tmp_path / "imgs" / name, 12)
    folder = FolderImages(tmp_path / "imgs")
    spec = write_shards(folder, tmp_path / "shards", per_shard=2, name="many")
    source = open_images(spec)
    assert len(source.shards) == 12

    shard_folder = str(tmp_path / "shards")

    def opened() -> int:  # this process's open files that are shards of this test (other tests' files come and go)
        targets = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                targets.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:  # closed between the listing and the read
                pass
        return sum(target.startswith(shard_folder) for target in targets)

    assert opened() == 0
    for index in range(len(source)):
        source.load(index)
        assert opened() <= 3
    assert len(source._files.open) == 3 and opened() == 3
    del source
    gc.collect()
    assert opened() == 0
