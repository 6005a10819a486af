"""Write docs/bad-input.md: every bad input the tests try, with the one line the user sees.

    python scripts/bad_input_table.py            # runs the bad-input tests (a few minutes), then writes the page

The bad-input tests run with SSDISTILL_RECORD_MESSAGES set (tests/conftest.py), which collects each error line the
CLI prints in-process together with the test that provoked it; this script turns those lines into the page's table,
with temporary folders written as ``<tmp>`` and the repository as ``.``. tests/test_bad_input_docs.py checks that every
case of these files is on the page.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "bad-input.md"
FILES = (  # the test files whose cases the page lists, in the page's order
    "tests/integration/test_bad_input.py",
    "tests/integration/test_class_alignment.py",
    "tests/integration/test_bad_data.py",
    "tests/integration/test_lifecycle.py",
    "tests/integration/test_full_disk.py",
    "tests/integration/test_export_fidelity.py",
    "tests/engine/test_tracker_settings.py",
    "tests/engine/test_trainer_options.py",
)
TITLES = {
    "test_bad_input.py": "Configs, paths, weights and folders",
    "test_class_alignment.py": "Class sets of the training and evaluation splits",
    "test_bad_data.py": "Image lists, folders and images (through the CLI)",
    "test_lifecycle.py": "A run's life: resume, signals, locks, checkpoints",
    "test_full_disk.py": "Full disks and unwritable folders",
    "test_export_fidelity.py": "Export",
    "test_tracker_settings.py": "Experiment trackers (run.loggers)",
    "test_trainer_options.py": "Trainer settings (precision, strategy, trainer.extra)",
}
TMP = re.compile(r"/tmp/(?:pytest-of-[^/]+/pytest-\d+/(?:popen-gw\d+/)?[^/\s]+|[^/\s]+)")  # a test's own folder, with or without xdist

HEADER = """# When the input is wrong

ssdistill checks what it can before a run directory exists, and every mistake it finds costs one line on stderr
(`error: ...`, exit code 2) that says what is wrong and what to do; nothing is left behind. This page lists every bad
input the test suite tries, with the exact line a user sees. It is written by `python scripts/bad_input_table.py`
from the tests themselves (temporary folders are shown as `<tmp>`), and a test checks that no case is missing.

Interruptions are not errors, and end with a line of their own: Ctrl-C exits with code 130 and SIGTERM (a
scheduler's preemption) with 143, each printing `interrupted: ...` with the command that resumes the run.

"""


def run_tests(record: Path, workers: str) -> int:
    env = {**os.environ, "SSDISTILL_RECORD_MESSAGES": str(record), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *FILES]
    if workers != "0":
        command += ["-n", workers, "--dist", "loadfile"]
    return subprocess.run(command, cwd=REPO, env=env).returncode


def case_name(test: str) -> str:
    """``tests/x.py::test_name[case]`` -> ``case``; without parameters, the test's name in words."""
    name = test.split("::", 1)[-1]
    if "[" in name:
        return name[name.index("[") + 1 : -1]
    return name.removeprefix("test_").replace("_", " ")


def clean(message: str) -> str:
    message = message.replace(str(REPO) + "/", "").replace(str(REPO), ".")
    message = TMP.sub("<tmp>", message)
    return message.replace("|", "\\|")


def render(records: list[dict]) -> str:
    lines = [HEADER]
    for file in FILES:
        rows: dict[str, list[str]] = {}
        for record in records:
            if record["test"].startswith(file + "::"):
                rows.setdefault(record["test"], [])
                message = clean(record["message"])
                if message not in rows[record["test"]]:
                    rows[record["test"]].append(message)
        if not rows:
            continue
        lines.append(f"## {TITLES[Path(file).name]}\n")
        lines.append(f"From `{file}`.\n")
        lines.append("| case | what the user sees |")
        lines.append("| --- | --- |")
        for test, messages in rows.items():
            shown = "<br>".join(f"`error: {m}`" for m in messages)
            lines.append(f"| {case_name(test)} <!-- {test} --> | {shown} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    workers = os.environ.get("TEST_WORKERS", "2")
    with tempfile.TemporaryDirectory() as folder:
        record = Path(folder) / "messages.jsonl"
        code = run_tests(record, workers)
        if code != 0:
            sys.exit(f"the bad-input tests failed (exit {code}); fix them before writing the page")
        records = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    order = {name: i for i, name in enumerate(FILES)}
    records.sort(key=lambda r: order.get(r["test"].split("::")[0], len(order)))
    PAGE.write_text(render(records))
    print(f"{PAGE.relative_to(REPO)}: {len({r['test'] for r in records})} cases")


if __name__ == "__main__":
    main()
