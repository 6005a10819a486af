"""No module in src/ is over 350 lines unless CONTRIBUTING.md says why: its "Files over 350 lines" section is a table
whose first column names each such module (as a code span, from the repository root) and whose second says why it is
one file. The list stays true both ways: a module over the limit without a row fails, and so does a row whose module
is no longer over the limit (or no longer exists)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO

LIMIT = 350
CONTRIBUTING = REPO / "CONTRIBUTING.md"
HEADING = "## Files over 350 lines"
ROW = re.compile(r"^\|\s*`(?P<path>[^`]+)`\s*\|(?P<note>.*)\|\s*$")


def line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def source_sizes(root: Path = REPO) -> dict[str, int]:
    """{path from the repository root: lines} of every Python module under src/."""
    return {path.relative_to(root).as_posix(): line_count(path) for path in sorted((root / "src").rglob("*.py"))}


def listed_notes(text: str) -> dict[str, str]:
    """{module path: note} of the rows of the "Files over 350 lines" section of CONTRIBUTING.md's text."""
    if HEADING not in text:
        raise AssertionError(f"CONTRIBUTING.md has no section '{HEADING}'")
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    notes = {}
    for line in section.splitlines():
        row = ROW.match(line.strip())
        if row:
            notes[row["path"]] = row["note"].strip()
    return notes


def problems(sizes: dict[str, int], notes: dict[str, str]) -> list[str]:
    """What is wrong with the notes for these module sizes: modules over the limit without a note, notes of modules
    that are not over it (or gone), and notes that say nothing."""
    found = [
        f"{path} has {lines} lines (over {LIMIT}) and no row in CONTRIBUTING.md's '{HEADING[3:]}': split it, or add a row saying why it is one file"
        for path, lines in sorted(sizes.items())
        if lines > LIMIT and path not in notes
    ]
    for path, note in sorted(notes.items()):
        if path not in sizes:
            found.append(f"CONTRIBUTING.md lists {path}, which does not exist: remove its row")
        elif sizes[path] <= LIMIT:
            found.append(f"CONTRIBUTING.md lists {path}, which has {sizes[path]} lines (not over {LIMIT}): remove its row")
        if len(note.split()) < 8:
            found.append(f"the row of {path} in CONTRIBUTING.md does not say why it is one file: {note!r}")
    return found


def test_every_module_over_the_limit_is_explained_and_every_row_is_still_needed():
    found = problems(source_sizes(), listed_notes(CONTRIBUTING.read_text(encoding="utf-8")))
    assert not found, "\n".join(found)


def test_the_section_is_read_as_written():
    notes = listed_notes(CONTRIBUTING.read_text(encoding="utf-8"))
    assert notes and all(path.startswith("src/ssdistill/") and path.endswith(".py") for path in notes)
    assert all((REPO / path).is_file() for path in notes)


WHY = "it holds one protocol that every part of it reads and writes"


@pytest.mark.parametrize(
    "sizes, notes, expected",
    [
        ({"src/a.py": 351, "src/b.py": 350}, {"src/a.py": WHY}, []),
        ({"src/a.py": 351}, {}, ["src/a.py has 351 lines (over 350) and no row"]),
        ({"src/a.py": 350}, {"src/a.py": WHY}, ["CONTRIBUTING.md lists src/a.py, which has 350 lines (not over 350): remove its row"]),
        ({}, {"src/gone.py": WHY}, ["CONTRIBUTING.md lists src/gone.py, which does not exist: remove its row"]),
        ({"src/a.py": 400}, {"src/a.py": "big"}, ["the row of src/a.py in CONTRIBUTING.md does not say why it is one file: 'big'"]),
    ],
)
def test_the_check_catches_a_planted_case(sizes, notes, expected):
    found = problems(sizes, notes)
    assert len(found) == len(expected) and all(line.startswith(start) for line, start in zip(found, expected))


def test_the_rows_are_read_from_the_section_only():
    text = (
        "# Contributing\n\n| `src/elsewhere.py` | a table of another section, never read as a note here |\n\n"
        f"{HEADING}\n\nIntro.\n\n| file | why |\n| --- | --- |\n| `src/ssdistill/x.py` | {WHY} |\n\n## Next\n\n"
        "| `src/after.py` | a table after the section, never read as a note here either |\n"
    )
    assert listed_notes(text) == {"src/ssdistill/x.py": WHY}
    with pytest.raises(AssertionError, match="no section"):
        listed_notes("# Contributing\n")
