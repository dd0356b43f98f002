"""Bytes on disk of one REARM run after it completes, against the size of one checkpoint.

Trains REARM with the paper preset of a real Amazon split (default Baby) and seeded stand-in
features (``benchmarks/standin_features.py``) for a few epochs, with
``train.keep_checkpoints: all`` and ``train.checkpoint_minutes: 0`` so that both checkpoints
exist to be measured. Since the files a completed run keeps under each policy are fixed
(:data:`rearm_dgl.checkpoints.KEPT`, tested in ``tests/test_checkpoints.py``), the bytes a
completed run keeps under each policy follow: every other file of the run, plus the
checkpoints the policy keeps. It also reports how long one write of each checkpoint took.

    python benchmarks/run_disk.py                    # Baby, 2 epochs
    python benchmarks/run_disk.py --epochs 1 --threads 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from rearm_dgl import checkpoints, tracking
from rearm_dgl import train as train_mod
from rearm_dgl.config import build_config
from rearm_dgl.train import fit

ROOT = Path(__file__).resolve().parent.parent


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="baby",
                        help="an Amazon split name, or a dataset folder (used as it is)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="stand-in dataset root (default: a temp dir)")
    parser.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "amazon"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from standin_features import prepare

    work = Path(tempfile.mkdtemp(prefix="run_disk-"))
    data_dir = (Path(args.dataset) if Path(args.dataset).is_dir()
                else prepare(args.dataset, args.out or work / "data", source_root=args.source))
    cfg = build_config("rearm", str(data_dir), overrides=[
        f"train.epochs={args.epochs}", "train.device=cpu", "train.keep_checkpoints=all",
        "train.checkpoint_minutes=0", f"data.cache_dir={work / 'cache'}"])

    writes: dict[str, list[float]] = {}
    real_save = train_mod.save_checkpoint

    def timed_save(path, state):
        t = time.perf_counter()
        real_save(path, state)
        writes.setdefault(Path(path).name, []).append(time.perf_counter() - t)

    train_mod.save_checkpoint = timed_save
    t0 = time.perf_counter()
    result = fit(cfg, runs_dir=work / "runs", quiet=True)
    wall = time.perf_counter() - t0

    sizes = {p.name: p.stat().st_size for p in result.run_dir.iterdir() if p.is_file()}
    ckpt = {name: sizes.pop(name) for name in (tracking.CHECKPOINT_BEST, tracking.CHECKPOINT_LAST)}
    other = sum(sizes.values())
    eff = result.results["efficiency"]
    print(f"{args.dataset}: REARM preset, {args.epochs} epochs, {wall:.0f} s wall, "
          f"{eff['n_parameters']:,} trainable parameters, best epoch {result.best_epoch}")
    note = (" (no separate best weights inside: the final epoch was the best)"
            if result.best_epoch == result.epochs_run else " (with the best weights inside)")
    print(f"checkpoint_best.pt {_mb(ckpt[tracking.CHECKPOINT_BEST])} MB, "
          f"checkpoint_last.pt {_mb(ckpt[tracking.CHECKPOINT_LAST])} MB{note}")
    print(f"other files {_mb(other)} MB: " + ", ".join(
        f"{name} {_mb(size)}" for name, size in sorted(sizes.items(), key=lambda x: -x[1])))
    print("seconds per write: " + ", ".join(
        f"{name} {sum(v) / len(v):.1f}" for name, v in writes.items()))
    print("\n| keep_checkpoints | bytes kept after completion (MB) | vs one checkpoint_last.pt |")
    print("|---|---:|---:|")
    for policy, kept in checkpoints.KEPT.items():
        total = other + sum(ckpt[name] for name in kept)
        print(f"| {policy} | {_mb(total)} | {total / ckpt[tracking.CHECKPOINT_LAST]:.2f} |")
    print(json.dumps({"checkpoints": ckpt, "other": sizes, "writes_s": writes,
                      "efficiency": eff, "wall_s": wall}))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
