"""Filling the documentation's generated blocks: the text between ``<!-- marker -->`` and ``<!-- /marker -->``."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.quality.paths import DOCS


def replace_block(path: Path, marker: str, content: str) -> None:
    """Replace the text between ``<!-- marker -->`` and ``<!-- /marker -->`` in ``path``."""
    from ssdistill.files import atomic_write_text

    text = path.read_text()
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    if start not in text or end not in text:
        raise SystemExit(f"{path.name} has no {start} ... {end} block: add both markers where the table belongs")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(path, f"{head}{start}\n{content}{end}{tail}")


def show_table(markdown: str | None, measure_command: str, readme_marker: str | None) -> int:
    """A diagnostic's command-line ending: print its table (exit 1 with a hint when nothing is on record yet) and, given
    a marker, fill that block of docs/benchmarks.md with it."""
    if markdown is None:
        print(f"no record yet: run {measure_command}", file=sys.stderr)
        return 1
    print(markdown)
    if readme_marker is not None:
        replace_block(DOCS, readme_marker, markdown)
    return 0
