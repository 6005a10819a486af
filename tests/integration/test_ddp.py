"""Two CPU processes (gloo DDP) finish one run and see disjoint samples."""

import json
import os
import subprocess
import sys

import yaml

from conftest import REPO
from integration.common import tiny_config


def test_two_process_ddp_on_cpu_gives_each_rank_disjoint_samples(tmp_path):
    config = tiny_config(tmp_path, trainer={"epochs": 2, "devices": 2, "accelerator": "cpu"}, eval={"random_init": True})
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "SSDISTILL_RUN_DIR")}
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "integration" / "ddp_worker.py"), str(recipe), str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for epoch in (0, 1):
        records = [json.loads((tmp_path / f"indices-rank{r}-epoch{epoch}.json").read_text()) for r in (0, 1)]
        assert all(rec["world"] == 2 for rec in records)
        a, b = set(records[0]["indices"]), set(records[1]["indices"])
        assert len(a) == len(records[0]["indices"]) == 32 and len(b) == 32  # 64 images, batch 16, 2 steps per rank
        assert not a & b and a | b == set(range(64))
    run_dir = tmp_path / "runs" / "tiny"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == 4 and results["knn"]["student"]["top1"] > 0
    assert not list((tmp_path / "runs").glob("tiny-*"))  # both processes wrote to one run directory
