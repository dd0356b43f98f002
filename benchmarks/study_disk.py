"""Bytes on disk of a tuning study against the size of one checkpoint.

Runs ``rearm-dgl tune`` on the demo data (default: 20 REARM trials of 2 epochs each) in a
fresh folder, then reports the study folder's size, the largest trial folder, the bytes of
``*.pt`` files left in trial folders, and the size of one checkpoint of the same model.
A study whose disk use grows with the number of trials only by small text artifacts keeps
no checkpoint per trial.

    flock /tmp/rearm-heavy.lock python benchmarks/study_disk.py --trials 20
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def folder_bytes(path: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--model", default="rearm")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="study-disk-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        cmd = [sys.executable, "-c", "from rearm_dgl.cli import main; main()", "tune",
               "--model", args.model, "--dataset", "demo", "--trials", str(args.trials),
               "--pruner", "none", "--set", f"train.epochs={args.epochs}"]
        subprocess.run(cmd, cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        study = tmp / "studies" / f"{args.model}-demo"
        trials = sorted((study / "trials").iterdir())
        # One checkpoint of the same model: a 1-epoch run that keeps its last checkpoint.
        subprocess.run([sys.executable, "-c", "from rearm_dgl.cli import main; main()",
                        "train", "--model", args.model, "--dataset", "demo", "--epochs", "1",
                        "--runs-dir", str(tmp / "runs"), "--quiet",
                        "--set", "train.keep_checkpoints=last"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        checkpoint = max(p.stat().st_size for p in (tmp / "runs").rglob("*.pt"))
        report = {
            "model": args.model, "trials": len(trials), "epochs": args.epochs,
            "study_bytes": folder_bytes(study),
            "largest_trial_bytes": max(folder_bytes(t) for t in trials),
            "checkpoint_files_in_trials_bytes": folder_bytes(study / "trials", "*.pt"),
            "one_checkpoint_bytes": checkpoint,
            "seconds": round(seconds, 1),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
