"""One training epoch and one validation evaluation of any registered model at real scale.

Uses the real Amazon splits with seeded stand-in features of the real shapes
(``benchmarks/standin_features.py``) and the model's shipped preset for the dataset. Each
(model, dataset) runs in its own process, so its peak RSS is its own; the relation graph is
built (or read from the cache) in a child process first, so the one-off graph build does not
count either. The epoch runs exactly as ``train.fit`` runs one: the model's learning-rate
scale and pre-epoch hook, then every BPR batch of the epoch with backward and optimiser step.

    python benchmarks/baseline_epoch.py --models lattice dragon mgcn --datasets baby clothing
    python benchmarks/baseline_epoch.py --models mgcn --datasets baby --batches 5   # a quick look

Prints one Markdown row per run: seconds per epoch, the median seconds per batch (steadier
than the mean on a shared machine), seconds per evaluation, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from rearm_dgl.config import build_config
from rearm_dgl.data import load_dataset
from rearm_dgl.evaluation.protocol import evaluate, model_scorer
from rearm_dgl.graphs import load_or_build_graph
from rearm_dgl.models import registry
from rearm_dgl.sampling import BPRSampler
from rearm_dgl.tracking import peak_rss_bytes
from rearm_dgl.train import seed_everything

ROOT = Path(__file__).resolve().parent.parent


def prepare(name: str, out_root: Path, source_root: str) -> Path:
    """The stand-in dataset folder for ``name`` (made once; seeded, so always the same)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from standin_features import prepare as make

    return make(name, out_root, source_root=source_root)


def build_graph_only(path: Path, model: str) -> None:
    cfg = build_config(model, str(path))
    t0 = time.perf_counter()
    load_or_build_graph(load_dataset(cfg.data), cfg.graph)
    print(f"graph ready ({path.name}, {cfg.graph}) in {time.perf_counter() - t0:.1f} s",
          flush=True)


def one_run(path: Path, model_name: str, max_batches: int | None) -> dict:
    """Time one epoch and one validation evaluation of ``model_name`` on ``path``."""
    cfg = build_config(model_name, str(path), overrides=["train.device=cpu"])
    data = load_dataset(cfg.data)
    graph = load_or_build_graph(data, cfg.graph)
    seed_everything(cfg.train.seed)
    t0 = time.perf_counter()
    model = registry.get(model_name).build(cfg.params, data, graph, torch.device("cpu"))
    build_s = time.perf_counter() - t0
    optimizer = model.configure_optimizer(cfg.train.lr)
    sampler = BPRSampler(data, cfg.train.negatives, cfg.train.batch_size, cfg.train.seed)

    t0 = time.perf_counter()
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("initial_lr", group["lr"]) * model.lr_scale(1)
    model.train()
    model.start_epoch(1)
    n_batches, batch_s = 0, []
    for batch in sampler.batches(1):
        t_batch = time.perf_counter()
        out = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        optimizer.step()
        batch_s.append(time.perf_counter() - t_batch)
        n_batches += 1
        if max_batches is not None and n_batches >= max_batches:
            break
    epoch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    valid = evaluate(model_scorer(model), data, "valid", cfg.eval, "cpu").metrics
    eval_s = time.perf_counter() - t0
    return {
        "model": model_name, "dataset": path.name, "batches": n_batches,
        "epoch_s": epoch_s, "s_per_batch": epoch_s / max(n_batches, 1), "eval_s": eval_s,
        "median_batch_s": statistics.median(batch_s), "first_batch_s": batch_s[0],
        "build_s": build_s, "peak_rss_gb": peak_rss_bytes() / 2**30,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "valid_recall20": valid.get("Recall@20"), "loss": float(out.total.detach()),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["lattice", "dragon", "mgcn"])
    ap.add_argument("--datasets", nargs="+", default=["baby", "clothing"])
    ap.add_argument("--out", default=str(ROOT / "data" / "standin"),
                    help="where the stand-in datasets are written")
    ap.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "amazon"),
                    help="folder holding the real splits, one sub-folder per dataset")
    ap.add_argument("--batches", type=int, default=None, help="stop the epoch after N batches")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--one", nargs=2, metavar=("PATH", "MODEL"), help=argparse.SUPPRESS)
    ap.add_argument("--graph-only", nargs=2, metavar=("PATH", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.graph_only:
        build_graph_only(Path(args.graph_only[0]), args.graph_only[1])
        return
    if args.one:
        print("RESULT " + json.dumps(one_run(Path(args.one[0]), args.one[1], args.batches)),
              flush=True)
        return

    extra = [f"--threads={args.threads}"] if args.threads else []
    extra += [f"--batches={args.batches}"] if args.batches else []
    rows = []
    for name in args.datasets:
        path = prepare(name, Path(args.out), args.source)
        subprocess.run([sys.executable, __file__, "--graph-only", str(path), args.models[0]]
                       + extra, check=True)
        for model in args.models:
            proc = subprocess.run([sys.executable, __file__, "--one", str(path), model] + extra,
                                  check=True, capture_output=True, text=True)
            line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
            row = json.loads(line[len("RESULT "):])
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{rows[0]['threads'] if rows else '?'} threads\n")
    print("| model | dataset | batches | s / epoch | median s / batch | s / evaluation |"
          " peak RSS GiB | parameters |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        median = r.get("median_batch_s", r["s_per_batch"])
        print(f"| {r['model']} | {r['dataset']} | {r['batches']} | {r['epoch_s']:.1f} | "
              f"{median:.2f} | {r['eval_s']:.1f} | {r['peak_rss_gb']:.2f} | "
              f"{r['n_parameters'] / 1e6:.1f} M |")


if __name__ == "__main__":
    main()
