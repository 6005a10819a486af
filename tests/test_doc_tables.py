"""The documentation's figure tables (``<!-- rows:NAME -->`` blocks, benchmarks/doc_tables.py) are what the committed
benchmark records give, each lives in one page, and a stale block is caught."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from benchmarks import doc_tables

REPO = Path(__file__).resolve().parents[1]


def _pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def test_every_rows_block_is_what_the_records_give():
    stale = doc_tables.stale()
    assert not stale, f"stale documentation tables {stale}: run python -m benchmarks.doc_tables"


def test_each_rows_marker_appears_once_and_is_generated():
    seen: dict[str, list[str]] = {}
    for page in _pages():
        text = page.read_text()
        for name in re.findall(r"<!-- rows:([\w-]+) -->", text):
            seen.setdefault(name, []).append(str(page.relative_to(REPO)))
        for name in re.findall(r"<!-- /rows:([\w-]+) -->", text):
            assert f"<!-- rows:{name} -->" in text, f"{page.name}: closing marker of rows:{name} without its opening"
    twice = {name: where for name, where in seen.items() if len(where) > 1}
    assert not twice, f"tables in two places: {twice}"
    assert set(seen) == set(doc_tables.BLOCKS), f"blocks without a generator or pages without their block: {set(seen) ^ set(doc_tables.BLOCKS)}"
    for name, where in seen.items():
        assert where == [f"docs/{doc_tables.BLOCKS[name][0]}"], f"rows:{name} is in {where}, not in the page BLOCKS names"


def _record(k20: float, linear: float, teacher: float, random_init: float, images_per_s: float) -> dict:
    def model(top1, lin):
        return {"knn": {"k20_t0.07": {"top1": top1}}, "linear": {"top1": lin}}

    return {
        "created": "2026-01-01T00:00:00+00:00",
        "teacher": {"name": "t"},
        "knn": {"teacher": {"top1": teacher}, "random_init": {"top1": random_init}, "student": {"top1": k20}},
        "evaluation": {"models": {"teacher": model(teacher, 90.0), "random_init": model(random_init, 30.0), "student": model(k20, linear)}},
        "timing": {"train_seconds": 900.0, "train_images_per_s": images_per_s},
    }


def test_a_row_is_rendered_from_its_record(tmp_path):
    """Hand-made records: figures rounded as the benchmark tables round them, % of teacher against the benchmark's
    teacher, the link to the benchmarks page relative to the page."""
    for bench in ("q1", "q2"):
        (tmp_path / bench).mkdir()
    (tmp_path / "q1" / "feature-cpu.json").write_text(json.dumps(_record(60.04, 61.26, 80.0, 20.0, 171.4)))
    (tmp_path / "q1" / "bingo-cpu.json").write_text(json.dumps(_record(64.0, 65.0, 80.0, 20.0, 30.6)))
    (tmp_path / "q1" / "disco-cpu.json").write_text(json.dumps(_record(63.0, 64.0, 80.0, 20.0, 46.0)))
    (tmp_path / "q2" / "bingo-cpu.json").write_text(json.dumps(_record(40.0, 41.0, 50.0, 10.0, 44.0)))
    (tmp_path / "q2" / "disco-cpu.json").write_text(json.dumps(_record(45.56, 47.0, 50.0, 10.0, 157.2)))
    table = doc_tables.render("method-bingo", tmp_path)
    assert "| [Q1](../benchmarks.md#q1) | BINGO | 64.0 | 65.0 | 80 | 31 |" in table
    assert "| [Q1](../benchmarks.md#q1) | feature regression, for comparison | 60.0 | 61.3 | 75 | 171 |" in table
    assert "| [Q2](../benchmarks.md#q2) | DisCo, for comparison | 45.6 | 47.0 | 91 | 157 |" in table
    assert "[Q1](../benchmarks.md#q1), [Q2](../benchmarks.md#q2)" in table.splitlines()[0]  # the caption names the tables
    # from a page at the top of docs/ the same link has no ../
    cost = doc_tables.render("choosing-cost", tmp_path)
    assert "| random-init student |  | – | 20.0 / 30.0 | – | 10.0 / 30.0 |" in cost
    assert "| [BINGO](methods/bingo.md) | cached bags; keys banked (Q1), online (Q2) | 31 | 64.0 / 65.0 | 44 | 40.0 / 41.0 |" in cost
    assert "| [DisCo](methods/baselines.md) | cached original view (Q1), online (Q2) | 46 | 63.0 / 64.0 | 157 | 45.6 / 47.0 |" in cost
    assert "| [SEED](methods/baselines.md) | bank of 8 cached crops (Q1), online (Q2) | – | – | – | – |" in cost  # no record: dashes
    assert "[Q1](benchmarks.md#q1)" in cost


def test_a_missing_record_says_how_to_measure_it(tmp_path):
    (tmp_path / "q1").mkdir()
    (tmp_path / "q1" / "feature-cpu.json").write_text(json.dumps(_record(60.0, 61.0, 80.0, 20.0, 171.0)))
    with pytest.raises(SystemExit, match=r"no record .*q1/bingo-cpu.json: run python -m benchmarks.quality --tier cpu --bench q1 --only bingo"):
        doc_tables.render("method-bingo", tmp_path)


def test_check_finds_a_stale_block_and_the_rewrite_mends_it(tmp_path, capsys):
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "docs", docs)
    page = docs / "methods" / "bingo.md"
    text = page.read_text()
    block = text.split("<!-- rows:method-bingo -->\n", 1)[1].split("<!-- /rows:method-bingo -->", 1)[0]
    edited = re.sub(r"\| BINGO \| \d+\.\d", "| BINGO | 12.3", block, count=1)  # a figure typed by hand
    assert edited != block
    page.write_text(text.replace(block, edited))
    assert doc_tables.main(["--check", "--docs", str(docs)]) == 1
    assert "docs/methods/bingo.md: block rows:method-bingo is stale or missing: run python -m benchmarks.doc_tables" in capsys.readouterr().out
    assert doc_tables.main(["--docs", str(docs)]) == 0
    assert page.read_text() == text
    assert doc_tables.main(["--check", "--docs", str(docs)]) == 0
