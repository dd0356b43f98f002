"""Reproduce the MMRec benchmark's BPR-MF and LightGCN numbers on the Amazon Baby split.

Both models are ID-only, so the published numbers can be checked without features. Every run
goes through the project's own loader, BPR sampler, trainer and evaluator (``fit``) under the
MMRec protocol: embedding 64, Adam lr 1e-3 with a constant schedule, batch 2048, one negative
per positive drawn outside the user's training items (``train.negatives=train_only``), full
ranking with training items masked, early stopping with patience 20 on valid Recall@20, and
test scored once at the best validation epoch.

    python benchmarks/reproduce_baselines.py                       # mf + lightgcn, presets
    python benchmarks/reproduce_baselines.py --models lightgcn --grid   # MMRec's full grid
    python benchmarks/reproduce_baselines.py --models mf --set mf.reg_weight=1e-3
    python benchmarks/reproduce_baselines.py --collect runs/repro  # table from saved runs

By default LightGCN runs the preset setting only (``rearm_dgl/presets/lightgcn.yaml``);
``--grid`` searches MMRec's n_layers {1..4} x reg_weight {1e-2..1e-6} and reports the
setting with the best valid Recall@20. The table is printed as Markdown, ready for
``benchmarks/RESULTS.md``; the runs stay in ``--runs-dir`` and ``--collect`` rebuilds the
table from them without training.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

from rearm_dgl.config import build_config
from rearm_dgl.data import load_dataset
from rearm_dgl.graphs.build import build_graph
from rearm_dgl.models import registry
from rearm_dgl.train import fit

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "amazon" / "baby"

#: MMRec benchmark, Amazon Baby, test Recall@20 / NDCG@20 at the best validation epoch.
PUBLISHED = {
    "mf": {"label": "BPR-MF", "Recall@20": 0.0575, "NDCG@20": 0.0249},
    "lightgcn": {"label": "LightGCN", "Recall@20": 0.0754, "NDCG@20": 0.0328},
}
MMREC_PROTOCOL = ["train.lr=1e-3", "train.batch_size=2048", "train.patience=20",
                  "train.negatives=train_only", "train.epochs=1000", "eval.metric=Recall@20"]
GRIDS = {
    "lightgcn": {"lightgcn.n_layers": [1, 2, 3, 4],
                 "lightgcn.reg_weight": [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]},
    # MMRec's BPR grid; mf uses MMRec's un-squared norm penalty, so the values mean the same.
    "mf": {"mf.reg_weight": [2.0, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5]},
}
TOLERANCE = 0.05  # relative


def settings(model: str, grid: bool) -> list[list[str]]:
    """The ``--set`` overrides of every run for ``model``: one list per setting."""
    if grid:
        space = GRIDS[model]
        return [[f"{k}={v}" for k, v in zip(space, combo)]
                for combo in itertools.product(*space.values())]
    return [[]]


def run_one(model: str, data, overrides: list[str], args, graphs: dict) -> dict:
    """Train one setting with ``fit`` and return its ``results.json`` content.

    The heterograph is built once per graph setting and shared by the runs (``graphs``).
    """
    sets = MMREC_PROTOCOL + [f"train.seed={args.seed}", f"train.device={args.device}"]
    if args.epochs:
        sets.append(f"train.epochs={args.epochs}")
    cfg = build_config(model, str(args.data), overrides=sets + args.overrides + overrides)
    print(f"[{time.strftime('%H:%M:%S')}] {model} {' '.join(overrides) or '(preset)'}",
          flush=True)
    graph = None
    if getattr(registry.get(model), "needs_graph", True):
        if cfg.graph not in graphs:
            t = time.perf_counter()
            graphs[cfg.graph] = build_graph(data, cfg.graph)
            print(f"    graph built in {time.perf_counter() - t:.1f}s", flush=True)
        graph = graphs[cfg.graph]
    result = fit(cfg, runs_dir=args.runs_dir, data=data, graph=graph, quiet=not args.verbose)
    print(f"    -> valid R@20 {result.valid.get('Recall@20', float('nan')):.4f}  "
          f"test R@20 {result.test['Recall@20']:.4f}  N@20 {result.test['NDCG@20']:.4f}  "
          f"best epoch {result.best_epoch}/{result.epochs_run}  {result.wall_seconds:.0f}s  "
          f"({result.run_dir})", flush=True)
    return result.results


def collect(runs_dir: Path) -> dict[str, list[dict]]:
    """Saved ``results.json`` of every completed run under ``runs_dir``, by model."""
    found: dict[str, list[dict]] = {}
    for path in sorted(runs_dir.glob("*/*/*/results.json")):
        res = json.loads(path.read_text())
        if res.get("status") != "completed" or res.get("model") not in PUBLISHED:
            continue
        cfg_path = path.parent / "config.yaml"
        res["_config"] = cfg_path.read_text() if cfg_path.exists() else ""
        res["_run_dir"] = str(path.parent)
        found.setdefault(res["model"], []).append(res)
    return found


def _setting(res: dict) -> str:
    import yaml

    cfg = yaml.safe_load(res.get("_config") or "{}") or {}
    params = cfg.get(res["model"], {})
    train = cfg.get("train", {})
    parts = [f"{k}={v}" for k, v in params.items()]
    parts.append(f"lr={train.get('lr')}, batch={train.get('batch_size')}, "
                 f"negatives={train.get('negatives')}, seed={train.get('seed')}")
    return ", ".join(parts)


def table(found: dict[str, list[dict]]) -> str:
    """Markdown: the best-valid run of each model beside the published numbers."""
    lines = [
        "| model | setting (best valid R@20) | runs | test R@20 (ours / MMRec / gap) | "
        "test N@20 (ours / MMRec / gap) | best epoch / run | wall (best run / all runs) |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, pub in PUBLISHED.items():
        runs = found.get(model, [])
        if not runs:
            continue
        best = max(runs, key=lambda r: r["valid"].get("Recall@20", -1.0))
        cells = []
        for metric in ("Recall@20", "NDCG@20"):
            ours = best["test"][metric]
            gap = (ours - pub[metric]) / pub[metric]
            flag = "" if abs(gap) <= TOLERANCE else " (!)"
            cells.append(f"{ours:.4f} / {pub[metric]:.4f} / {gap:+.1%}{flag}")
        wall_all = sum(r["wall_seconds"] for r in runs)
        lines.append(
            f"| {pub['label']} | {_setting(best)} | {len(runs)} | {cells[0]} | {cells[1]} | "
            f"{best['best_epoch']} / {best['epochs_run']} | "
            f"{best['wall_seconds'] / 60:.1f} min / {wall_all / 60:.1f} min |")
    lines.append("")
    lines.append(f"Gap = ours / published - 1 on test; (!) marks a gap beyond "
                 f"{TOLERANCE:.0%}. Published: MMRec benchmark, Amazon Baby.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="the Baby split folder (train/valid/test.npy)")
    parser.add_argument("--models", nargs="+", default=list(PUBLISHED), choices=list(PUBLISHED))
    parser.add_argument("--grid", action="store_true",
                        help="search the grid (LightGCN: MMRec's n_layers x reg_weight)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="extra config override for every run")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "repro")
    parser.add_argument("--collect", type=Path, default=None,
                        help="print the table from the runs saved in this folder; no training")
    parser.add_argument("--epochs", type=int, default=0, help="cap on epochs (0: 1000)")
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--verbose", action="store_true", help="log every epoch")
    args = parser.parse_args(argv)

    if args.collect is not None:
        print(table(collect(args.collect)))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(build_config("mf", str(args.data)).data)
    print(f"data: {data.name} {data.n_users} users, {data.n_items} items, "
          f"{data.train.shape[1]}/{data.valid.shape[1]}/{data.test.shape[1]} "
          f"train/valid/test; torch threads {torch.get_num_threads()}", flush=True)
    graphs: dict = {}
    for model in args.models:
        for overrides in settings(model, args.grid):
            run_one(model, data, overrides, args, graphs)
    print()
    print(table(collect(args.runs_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
