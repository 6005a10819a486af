import json
import multiprocessing as mp
from dataclasses import replace

import numpy as np
import pytest
import torch

from ssdistill.cache.store import Entry, EntryKey, list_entries, open_or_fill, remove_entries

KEY = EntryKey("t", "fp", "pooled", "original:32:1.0:bilinear", "dfp", n=37, dtype="float32")
DIM = 5


def rows_to_vectors(rows: list[int]) -> torch.Tensor:
    """A deterministic 'teacher': row r -> [sin(r), sin(2r), ...]."""
    r = torch.tensor(rows, dtype=torch.float64).view(-1, 1)
    return torch.sin(r * torch.arange(1, DIM + 1, dtype=torch.float64)).float()


def compute_in_batches(batch: int, fail_after: int | None = None):
    def compute(rows):
        for i, start in enumerate(range(0, len(rows), batch)):
            if fail_after is not None and i == fail_after:
                raise KeyboardInterrupt("killed")
            yield rows_to_vectors(rows[start : start + batch])

    return compute


def test_every_key_field_changes_the_entry():
    digests = {KEY.digest()}
    for field, value in [
        ("teacher", "u"), ("teacher_fingerprint", "fp2"), ("tap", "logits"), ("view", "original:64:1.0:bilinear"),
        ("dataset_fingerprint", "dfp2"), ("n", 38), ("dtype", "float16"),
    ]:
        digests.add(replace(KEY, **{field: value}).digest())
    assert len(digests) == 8


def test_fill_then_read_gives_the_rows_and_a_manifest(tmp_path):
    entry = Entry(tmp_path, KEY, DIM, chunk_rows=8)
    table = open_or_fill(entry, compute_in_batches(4))
    assert table.shape == (37, DIM) and table.dtype == torch.float32
    assert torch.equal(table, rows_to_vectors(list(range(37))))
    manifest = json.loads(entry.manifest_path.read_text())
    assert manifest["shape"] == [37, DIM] and len(manifest["chunks"]) == 5 and manifest["key"]["n"] == 37
    # a second open reads without computing anything
    assert torch.equal(open_or_fill(entry, compute_in_batches(4, fail_after=0)), table)


def test_fp16_storage(tmp_path):
    entry = Entry(tmp_path, replace(KEY, dtype="float16"), DIM, chunk_rows=8)
    table = open_or_fill(entry, compute_in_batches(8))
    assert table.dtype == torch.float16
    assert torch.allclose(table.float(), rows_to_vectors(list(range(37))), atol=1e-3)
    assert entry.data_path.stat().st_size == 37 * DIM * 2


def test_a_killed_fill_resumes_to_byte_identical_content(tmp_path):
    whole = Entry(tmp_path / "a", KEY, DIM, chunk_rows=8)
    open_or_fill(whole, compute_in_batches(4))
    resumed = Entry(tmp_path / "b", KEY, DIM, chunk_rows=8)
    with pytest.raises(KeyboardInterrupt):
        resumed.fill(compute_in_batches(4, fail_after=5))  # dies inside chunk 2
    assert resumed.done_chunks() == {0, 1} and not resumed.is_complete()
    seen = []

    def recording(rows):
        seen.extend(rows)
        yield from compute_in_batches(4)(rows)

    open_or_fill(resumed, recording)
    assert seen == list(range(16, 37))  # only the missing rows were computed
    assert resumed.data_path.read_bytes() == whole.data_path.read_bytes()


def test_truncated_file_is_detected_and_rebuilt(tmp_path):
    entry = Entry(tmp_path, KEY, DIM, chunk_rows=8)
    open_or_fill(entry, compute_in_batches(4))
    with open(entry.data_path, "r+b") as handle:
        handle.truncate(100)
    table = open_or_fill(entry, compute_in_batches(4))
    assert torch.equal(table, rows_to_vectors(list(range(37))))


def test_flipped_byte_is_detected_and_only_its_chunk_recomputed(tmp_path):
    entry = Entry(tmp_path, KEY, DIM, chunk_rows=8)
    open_or_fill(entry, compute_in_batches(4))
    raw = bytearray(entry.data_path.read_bytes())
    raw[8 * DIM * 4 * 3 + 7] ^= 0x10  # a byte inside chunk 3
    entry.data_path.write_bytes(bytes(raw))
    assert entry.damaged_chunks() == [3]
    seen = []

    def recording(rows):
        seen.extend(rows)
        yield from compute_in_batches(4)(rows)

    table = open_or_fill(entry, recording)
    assert seen == list(range(24, 32))
    assert torch.equal(table, rows_to_vectors(list(range(37))))


def _fill_as_rank(root, rank, world):
    entry = Entry(root, KEY, DIM, chunk_rows=8)
    entry.fill(compute_in_batches(4), rank=rank, world=world, poll_seconds=0.05, wait_seconds=60)


def test_two_process_sharded_fill_equals_the_single_process_fill(tmp_path):
    single = Entry(tmp_path / "single", KEY, DIM, chunk_rows=8)
    open_or_fill(single, compute_in_batches(4))
    context = mp.get_context("spawn")
    workers = [context.Process(target=_fill_as_rank, args=(tmp_path / "sharded", r, 2)) for r in (1, 0)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    sharded = Entry(tmp_path / "sharded", KEY, DIM, chunk_rows=8)
    assert sharded.is_complete()
    assert sharded.data_path.read_bytes() == single.data_path.read_bytes()


def test_list_and_remove(tmp_path):
    open_or_fill(Entry(tmp_path, KEY, DIM, chunk_rows=8), compute_in_batches(4))
    partial = Entry(tmp_path, replace(KEY, dataset_fingerprint="x"), DIM, chunk_rows=8)
    with pytest.raises(KeyboardInterrupt):
        partial.fill(compute_in_batches(4, fail_after=1))
    listed = {e["name"]: e for e in list_entries(tmp_path)}
    assert sorted(e["state"] for e in listed.values()) == ["complete", "partial"]
    complete = next(e for e in listed.values() if e["state"] == "complete")
    assert complete["shape"] == [37, DIM] and complete["bytes"] >= 37 * DIM * 4
    assert remove_entries([complete["name"][:12]], tmp_path) == [complete["name"]]
    assert remove_entries(["all"], tmp_path) and list_entries(tmp_path) == []
