"""benchmarks/gpu.sh in its CPU quick mode: the GPU timing script runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_tiny_dataset

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_script_runs_on_the_cpu_in_quick_mode(tmp_path):
    # A small dataset in the REARM layout under the name "baby", so Baby's preset applies.
    write_tiny_dataset(tmp_path / "source" / "baby", n_users=120, n_items=60, features=False)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               OMP_NUM_THREADS="1")
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--device", "cpu", "--quick",
         "--datasets", "baby", "--epochs", "2", "--fit", "baby", "--source", str(tmp_path / "source"),
         "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    saved = json.loads((tmp_path / "out" / "gpu_results.json").read_text())
    (r,) = saved["results"]
    assert r["dataset"] == "baby" and r["device"] == "cpu"
    assert len(r["epoch_s"]) == 2 and all(s > 0 for s in r["epoch_s"])
    assert r["batches_per_epoch"] >= 1 and len(r["eval_s"]) == 1
    assert 0 < r["startup_s"] < 600 and r["peak_bytes"] > 0
    assert saved["prepare"]["baby"]["graph_s"] >= 0
    fit = saved["fit"]  # quick mode: the training to early stop is capped at 3 epochs
    assert fit["dataset"] == "baby" and fit["stop_reason"] == "max_epochs"
    assert fit["epochs_run"] == 3 and 0 <= fit["test"]["Recall@20"] <= 1
    table = (tmp_path / "out" / "gpu_results.md").read_text()
    assert "| baby |" in table and "5.3, 1.3-1.8, 41, 3.1" in table
    assert "max_epochs after 3 epochs" in table
