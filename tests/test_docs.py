"""The documentation is tested like the code: the site builds with ``mkdocs build --strict`` (no broken link, no missing
page or API reference), the README stays a short front page whose every link resolves, its results table is the one the
benchmark records render, and every shell or Python block marked ``<!-- runnable -->`` in the README and in getting
started runs as written (in a fresh folder holding the repository's ``configs/`` and ``data/``), so a documented
command cannot rot."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

README = REPO / "README.md"
RUNNABLE_PAGES = (README, REPO / "docs" / "getting-started.md")  # run by every test run
OTHER_PAGES = tuple(sorted(set((REPO / "docs").rglob("*.md")) - set(RUNNABLE_PAGES)))  # their blocks: configs checked, run on request
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
BLOCK = re.compile(r"^<!-- runnable -->\n```(bash|python)\n(.*?)^```", re.S | re.M)


def runnable_blocks(pages=RUNNABLE_PAGES) -> list[tuple[str, str, str]]:
    """(id, language, code) of every block marked runnable in ``pages`` (the README and getting started)."""
    blocks = []
    for page in pages:
        if not page.is_file():
            continue
        for number, match in enumerate(BLOCK.finditer(page.read_text()), 1):
            blocks.append((f"{page.relative_to(REPO)}#{number}", match.group(1), match.group(2)))
    return blocks


def heading_anchors(page: Path) -> set[str]:
    """The anchors a markdown page defines: ``{#id}`` attributes and headings slugged as Python-Markdown's toc does."""
    anchors = set()
    for line in page.read_text().splitlines():
        if not line.startswith("#"):
            continue
        explicit = re.search(r"\{#([\w-]+)\}\s*$", line)
        if explicit:
            anchors.add(explicit.group(1))
            continue
        text = re.sub(r"[`*_\[\]()]", "", line.lstrip("#").strip()).lower()
        anchors.add(re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", text)).strip("-"))
    return anchors


def test_readme_is_a_short_front_page_with_the_install_near_the_top():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; it must stay <= 250 (move detail to docs/)"
    install = next(i for i, line in enumerate(lines, 1) if line.startswith("## ") and "command" in line.lower())
    assert install <= 60, f"the install commands start at line {install}; they must be within the first 60 lines"
    assert "make demo" in "\n".join(lines[install : install + 8]) and "make test" in "\n".join(lines[install : install + 8])


def test_every_link_of_the_readme_resolves_to_a_file_and_anchor_of_the_repository():
    broken = []
    for target in LINK.findall(README.read_text()):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (REPO / path) if path else README
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in heading_anchors(file):
            broken.append(target)
    assert not broken, f"README.md links to what the repository does not hold: {broken}"


def test_the_repository_cites_only_documents_it_holds():
    """No page, config, docstring or comment sends a reader to the team's internal references (not in the repository):
    they cite the documentation site's pages instead."""
    listed = subprocess.run(
        ["git", "ls-files", "README.md", "docs", "src", "configs", "benchmarks", "tests", "scripts"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    found = []
    for name in listed:
        if not name.endswith((".py", ".md", ".yaml", ".yml")) or name == "tests/test_docs.py" or name.startswith("benchmarks/results/"):
            continue
        text = (REPO / name).read_text()
        if re.search(r"shared/docs|METHODS\.md|BENCHMARKS\.md|DESIGN\.md|METHODS §?\d", text):
            found.append(name)
    assert not found, f"these cite the team's internal documents: {found}"


def test_the_readme_results_table_is_the_one_the_benchmark_records_render():
    from benchmarks import headline

    block = README.read_text().split("<!-- headline -->\n", 1)[1].split("<!-- /headline -->", 1)[0]
    assert block == headline.table(), "README's results table is stale: run python -m benchmarks.headline"


def test_no_benchmark_table_lives_in_two_places():
    """Each generated block (``<!-- bench:... -->``, ``<!-- demo:... -->``, ``<!-- spread -->``) is in exactly one file
    (the ``rows:`` blocks of the other pages: tests/test_doc_tables.py)."""
    pages = [README, *(REPO / "docs").rglob("*.md")]
    seen: dict[str, list[str]] = {}
    for page in pages:
        for marker in re.findall(r"<!-- ((?:bench|demo):[\w-]+|spread|headline) -->", page.read_text()):
            seen.setdefault(marker, []).append(str(page.relative_to(REPO)))
    twice = {marker: where for marker, where in seen.items() if len(where) > 1}
    assert not twice, f"tables in two places: {twice}"
    assert "bench:q1-cpu" in seen and "demo:results" in seen


@pytest.mark.skipif(
    shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None and os.environ.get("SSDISTILL_REQUIRE_DOCS") != "1",
    reason="mkdocs is not installed (pip install -e '.[docs]')",
)
def test_the_site_builds_strictly(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    done = subprocess.run(
        [str(mkdocs), "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    problems = [line for line in (done.stdout + done.stderr).splitlines() if "WARNING" in line or "ERROR" in line]
    assert done.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(problems or [done.stderr[-2000:]])
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "ssdistill.api.distill" in api and "resume=RUN_DIR" in api  # the API reference is rendered from the docstrings


def test_every_runnable_block_is_found():
    blocks = runnable_blocks()
    assert any(b[0].startswith("README") for b in blocks) and any(b[0].startswith("docs/getting-started") for b in blocks)


@pytest.fixture(scope="module")
def reader_folder(tmp_path_factory):
    """The folder a reader works in, shared by every block in page order (the README's, then getting started's): a
    later block may use what an earlier one made (``runs/first``), as a reader following the pages would. Holds
    links to the repository's ``configs/`` and ``data/``; ``ran`` keeps the blocks already run there."""
    folder = tmp_path_factory.mktemp("reader")
    for name in ("configs", "data"):
        (folder / name).symlink_to(REPO / name)
    return {"path": folder, "ran": set()}


@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda b: b[0])
def test_documented_command_runs(block, reader_folder):
    """A block shown twice (the README's quick start is also a step of getting started) runs once."""
    name, language, code = block
    if code in reader_folder["ran"]:
        return
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
    done = subprocess.run(command, cwd=reader_folder["path"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{name} failed ({done.returncode}):\n{code}\n--- output ---\n{(done.stdout + done.stderr)[-3000:]}"
    reader_folder["ran"].add(code)


def distill_commands(code: str) -> list[list[str]]:
    """The arguments of every ``ssdistill distill`` command of a shell block (continuation lines joined, comments
    dropped)."""
    import shlex

    joined = re.sub(r"\\\n\s*", " ", code)
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words[:2] == ["ssdistill", "distill"]:
            commands.append(words[2:])
    return commands


def resolved_config(arguments: list[str]):
    """The config a ``ssdistill distill`` command line resolves to, as the command line builds it."""
    from ssdistill.recipe import build_config, parse_overrides

    config, overrides, words = None, [], list(arguments)
    while words:
        word = words.pop(0)
        if word == "--config":
            config = words.pop(0)
        elif word == "--recipe":
            overrides.append(f"recipe={words.pop(0)}")
        else:
            overrides.append(word)
    return build_config(config, parse_overrides(overrides))


OTHER_BLOCKS = [block for block in runnable_blocks(OTHER_PAGES) if block[1] == "bash"]


@pytest.mark.parametrize("block", OTHER_BLOCKS, ids=lambda b: b[0])
def test_documented_run_of_a_method_page_resolves_and_passes_the_pre_training_checks(block, monkeypatch):
    """Every other page's runnable blocks, checked on every test run without training: each ``ssdistill distill``
    command's config resolves (no unknown key, no invalid value) and passes the checks a run makes before training
    (splits, teachers, trackers, trainer settings). SSDISTILL_DOCS_RUN_ALL=1 runs them in full
    (test_documented_run_of_a_method_page_trains)."""
    from ssdistill.runs.assemble import check_inputs

    monkeypatch.chdir(REPO)
    commands = distill_commands(block[2])
    assert commands, f"{block[0]} is marked runnable but runs no ssdistill distill"
    for arguments in commands:
        check_inputs(resolved_config(arguments))


@pytest.mark.skipif(os.environ.get("SSDISTILL_DOCS_RUN_ALL") != "1", reason="set SSDISTILL_DOCS_RUN_ALL=1 to train every page's runnable blocks")
@pytest.mark.parametrize("block", OTHER_BLOCKS, ids=lambda b: b[0])
def test_documented_run_of_a_method_page_trains(block, reader_folder):
    test_documented_command_runs(block, reader_folder)
