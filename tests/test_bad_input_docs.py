"""docs/bad-input.md lists every case the bad-input test files try (it is written from them by
scripts/bad_input_table.py): a parametrised case added to one of those files without regenerating the page fails here,
and so does a row whose test no longer exists."""

import importlib.util
import re
import subprocess
import sys

from conftest import REPO

spec = importlib.util.spec_from_file_location("bad_input_table", REPO / "scripts" / "bad_input_table.py")
table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table)


def _collected() -> set[str]:
    listing = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *table.FILES],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.strip() for line in listing.splitlines() if "::" in line}


def test_the_bad_input_page_lists_every_case_and_no_stale_one():
    page = table.PAGE.read_text()
    listed = set(re.findall(r"<!-- (\S+::.+?) -->", page))
    collected = _collected()
    # the parametrised refusals (one row per bad input); other tests of these files may record lines too
    cases = {test for test in collected if "[" in test and re.search(r"bad|refuse", test.split("::")[1])}
    missing = sorted(case for case in cases if case not in listed)
    assert not missing, f"run `python scripts/bad_input_table.py`: docs/bad-input.md lacks {missing[:5]}"
    stale = sorted(test for test in listed if test not in collected)
    assert not stale, f"run `python scripts/bad_input_table.py`: docs/bad-input.md lists tests that are gone: {stale[:5]}"
    assert all(f"`{file}`" in page for file in table.FILES if any(t.startswith(file) for t in listed))
