"""Does a change alter any figure? Tiny real runs of every method (the integration tests' tiny config: 64 demo images,
the test_resnet teacher and student at 32 px, 2 epochs, teacher and random init evaluated) with the code of this
checkout and with the code of another commit, side by side on this machine; prints, per method, whether the k-NN
of every row, the alignment with the teacher and the last logged losses are identical.

    python scripts/compare_numerics.py --rev 5900306          # this checkout against commit 5900306
    python scripts/compare_numerics.py --run OUT.json          # (internal) one side's runs, written to OUT.json

The other commit is checked out into a temporary git worktree and imported from there (PYTHONPATH), with this
checkout's virtual environment. Methods that the other commit lacks are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = ("feature", "seed", "disco", "bingo", "moco", "mvmr")


def run_side(out: Path) -> None:
    import torch

    sys.path.insert(0, str(Path.cwd() / "tests"))
    from ssdistill import distill

    from integration.common import tiny_config

    rows = {}
    for name in METHODS:
        torch.manual_seed(1234)  # the tiny teacher is a random init: the same weights on both sides
        tmp = Path(tempfile.mkdtemp())
        config = tiny_config(tmp, eval={"teacher": True, "random_init": True}, trainer={"epochs": 2})
        config["method"] = {"name": name}
        try:
            record = distill(config, quiet=True)
        except Exception as exc:  # noqa: BLE001 - a method the other side lacks
            rows[name] = {"error": str(exc).splitlines()[0]}
            continue
        for row in record["knn"].values():  # timings are not figures of the run
            row.pop("images_per_s", None)
        lines = (tmp / "runs" / "tiny" / "metrics.csv").read_text().splitlines()
        rows[name] = {"knn": record["knn"], "metrics_tail": lines[-3:]}
    out.write_text(json.dumps(rows, indent=1, sort_keys=True))


def side(tree: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "SSDISTILL_CACHE_DIR": tempfile.mkdtemp(), "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "compare_numerics.py"), "--run", str(out)],
        cwd=tree,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="the commit to compare this checkout with")
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_side(args.run)
        return 0
    if not args.rev:
        parser.error("give --rev COMMIT")
    work = Path(tempfile.mkdtemp())
    other = work / "other"
    subprocess.run(["git", "worktree", "add", "--detach", str(other), args.rev], cwd=REPO, check=True, capture_output=True)
    try:
        theirs = side(other, work / "other.json")
        ours = side(REPO, work / "ours.json")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=REPO, capture_output=True)
    changed = 0
    for name in METHODS:
        a, b = theirs.get(name, {}), ours.get(name, {})
        if "error" in a or "error" in b:
            print(f"{name:<8} skipped: {a.get('error') or b.get('error')}")
            continue
        same = a == b
        changed += not same
        print(
            f"{name:<8} {'identical' if same else 'DIFFERENT'}: "
            + ", ".join(
                f"{label} {b['knn'][label]['top1']:.1f}"
                + ("" if a["knn"].get(label, {}).get("top1") == b["knn"][label]["top1"] else f" (was {a['knn'].get(label, {}).get('top1')})")
                for label in b["knn"]
            )
        )
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
