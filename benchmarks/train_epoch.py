"""Time one REARM training epoch and one full validation evaluation at real scale.

Uses the real Amazon split (``../shared/data/amazon/<name>``), the paper's preset for it, and
seeded stand-in features of the real shapes (I x 4096 image, I x 384 text) made by
``benchmarks/standin_features.py``. Prints seconds per epoch, seconds per evaluation, peak
RSS, and, from ``torch.profiler``, where a batch's time goes. The model's forward pass carries
``record_function`` labels (``rearm.projections``, ``rearm.homography``, ``rearm.attention``,
``rearm.heterography``, ``rearm.meta``, ``rearm.losses``); this script adds ``backward`` and
``optimiser`` around ``loss.backward()`` and the AdamW step, and lists the operators that take
the most self time inside the backward.

The timed batches run without the profiler; ``--profile N`` more batches run under it (the
profiler's own overhead is in its figures, not in the epoch time).

The relation graph is built (or read from the cache) in a child process first, so the peak
RSS reported is that of training and evaluation, not of the one-off graph build.

    python benchmarks/train_epoch.py                      # Baby, one full epoch
    python benchmarks/train_epoch.py --batches 5          # a quick look
    python benchmarks/train_epoch.py --threads 1 --clock cpu   # steadier on a busy machine
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from rearm_dgl.config import build_config
from rearm_dgl.data import load_dataset
from rearm_dgl.evaluation.protocol import evaluate, model_scorer
from rearm_dgl.graphs import load_or_build_graph
from rearm_dgl.tracking import peak_rss_bytes, rss_bytes
from rearm_dgl.train import training_parts

ROOT = Path(__file__).resolve().parent.parent
PIECES = ("projections", "homography", "attention", "heterography", "meta", "losses",
          "backward", "optimiser")
TARGETS = {"epoch_s": 60.0, "eval_s": 5.0, "rss_gb": 2.8}  # rss in GB = 10^9 bytes
TOP_OPS = 12
_NODE = "autograd::engine::evaluate_function: "
GIB = 2**30
GB = 10**9


def _dataset_dir(name: str, out_root: Path, source_root: str) -> Path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from standin_features import prepare

    return prepare(name, out_root, source_root=source_root)


def _prepare_graph(path: Path, name: str) -> None:
    cfg = build_config("rearm", str(path))
    t0 = time.perf_counter()
    load_or_build_graph(load_dataset(cfg.data), cfg.graph)
    print(f"graph ready ({name}, k_u={cfg.graph.user_knn_k}, k_i={cfg.graph.item_knn_k}) "
          f"in {time.perf_counter() - t0:.1f} s")


def _step(model, opt, batch) -> None:
    out = model.loss(batch)
    with record_function("backward"):
        out.total.backward()
    with record_function("optimiser"):
        opt.step()
        opt.zero_grad(set_to_none=True)


def _profile(model, opt, sampler, n: int) -> tuple[dict[str, float], dict[str, list]]:
    """Seconds per batch per labelled piece; the costliest autograd nodes and operators.

    Runs ``n`` batches of a fresh epoch under ``torch.profiler``; both figures are means over
    them (CPU time as the profiler measures it, with its own overhead).
    """
    if n <= 0:
        return {}, []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i, batch in enumerate(sampler.batches(1)):
            if i >= n:
                break
            _step(model, opt, batch)
    per_batch = {k: 0.0 for k in PIECES}
    backward_nodes: dict[str, float] = {}
    self_ops: dict[str, float] = {}
    for ev in prof.key_averages():
        name = ev.key.removeprefix("rearm.")
        if name in per_batch:
            per_batch[name] += ev.cpu_time_total / 1e6 / n
        elif ev.key.startswith(_NODE):
            # One autograd node's backward, its operators included.
            backward_nodes[ev.key.removeprefix(_NODE)] = ev.cpu_time_total / 1e6 / n
        else:
            self_ops[ev.key] = ev.self_cpu_time_total / 1e6 / n
    top = {
        "backward nodes": sorted(backward_nodes.items(), key=lambda kv: -kv[1])[:TOP_OPS],
        "operators (self time)": sorted(self_ops.items(), key=lambda kv: -kv[1])[:TOP_OPS],
    }
    return per_batch, top


def run(name: str, out_root: Path, source_root: str, max_batches: int | None,
        clock_name: str = "wall", profile_batches: int = 3, plain_step: bool = False) -> dict:
    """One epoch (or ``max_batches`` of it) and one validation evaluation; returns figures.

    ``clock_name="cpu"`` times with this process's CPU time instead of wall time: with one
    thread that is close to the wall time the same work takes on an idle core, so it is the
    steadier figure on a machine that other jobs share. ``plain_step`` holds every gradient
    until ``opt.step()`` instead of stepping the large parameters in the backward.
    """
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    path = _dataset_dir(name, out_root, source_root)
    # Graph build (or cache read) in a child process: its memory peak is not training's.
    subprocess.run([sys.executable, __file__, "--graph-only", str(path), "--dataset", name],
                   check=True)

    cfg = build_config("rearm", str(path))
    data = load_dataset(cfg.data)
    graph = load_or_build_graph(data, cfg.graph)
    device = torch.device("cpu")
    model, opt, sampler, data = training_parts(cfg, data, graph, device,
                                               step_large_in_backward=not plain_step)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{data.name}: {data.n_users} users, {data.n_items} items, "
          f"{data.train.shape[1]} train pairs, {n_params / 1e6:.1f} M parameters")
    print(f"features: {data.features_note}")

    rss = {"after build": rss_bytes() / GIB}
    model.train()
    batches = sampler.batches(0)
    n_batches = 0
    times = []
    for batch in batches:
        t0 = clock()
        _step(model, opt, batch)
        times.append(clock() - t0)
        if n_batches == 0:
            rss["after first step"] = rss_bytes() / GIB
        n_batches += 1
        if max_batches is not None and n_batches >= max_batches:
            break
    epoch_s = sum(times)
    train_peak = peak_rss_bytes()
    rss["peak in training"] = train_peak / GIB
    full_batches = -(-data.train.shape[1] // cfg.train.batch_size)
    if n_batches < full_batches:
        epoch_s = epoch_s / n_batches * full_batches  # projected to the whole epoch
    per_batch, top_ops = _profile(model, opt, sampler, profile_batches)

    t0 = clock()
    result = evaluate(model_scorer(model), data, "valid", cfg.eval, device)
    eval_s = clock() - t0
    return {
        "dataset": name, "users": data.n_users, "items": data.n_items,
        "batches_timed": n_batches, "batches_per_epoch": full_batches,
        "epoch_s": epoch_s, "eval_s": eval_s, "rss_gb": train_peak / GB,
        "process_rss_gb": peak_rss_bytes() / GB,
        "rss": rss, "clock": clock_name, "per_batch": per_batch, "top_ops": top_ops,
        "batch_s_median": statistics.median(times), "profiled": profile_batches,
        "valid_recall20": result.metrics.get("Recall@20"),
        "threads": torch.get_num_threads(), "load": os.getloadavg(),
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    }


def markdown(r: dict) -> str:
    """The result as a Markdown section for benchmarks/RESULTS.md."""
    def ok(key):
        return "yes" if r[key] <= TARGETS[key] else "**no**"

    total = sum(r["per_batch"].values())
    lines = [
        f"### REARM training epoch and evaluation ({r['dataset']}, {r['users']} users, "
        f"{r['items']} items)",
        "",
        f"{r['cores']} cores, torch {r['torch']} ({r['threads']} threads), "
        f"{'process CPU' if r['clock'] == 'cpu' else 'wall-clock'} seconds, "
        f"load average at the end {r['load'][0]:.1f} / {r['load'][1]:.1f} / "
        f"{r['load'][2]:.1f} (1/5/15 min).",
        f"Timed {r['batches_timed']} of {r['batches_per_epoch']} batches"
        + ("" if r["batches_timed"] == r["batches_per_epoch"] else
           " (the epoch time is projected from them)") + ".",
        "",
        "| measure | value | target | met |",
        "|---|---|---|---|",
        f"| seconds per training epoch | {r['epoch_s']:.1f} | <= {TARGETS['epoch_s']:.0f} "
        f"| {ok('epoch_s')} |",
        f"| seconds per full validation evaluation | {r['eval_s']:.2f} | <= "
        f"{TARGETS['eval_s']:.0f} | {ok('eval_s')} |",
        f"| peak RSS in training, GB (10^9 bytes) | {r['rss_gb']:.2f} "
        f"({r['rss_gb'] * GB / GIB:.2f} GiB) | <= {TARGETS['rss_gb']:.1f} | {ok('rss_gb')} |",
        f"| peak RSS of the process (profiler and evaluation too), GB | "
        f"{r['process_rss_gb']:.2f} | | |",
        "",
        "RSS (GiB): " + ", ".join(f"{k} {v:.2f}" for k, v in r["rss"].items()) + ".",
        "",
        f"Median batch {r['batch_s_median']:.3f} s. Where one batch's time goes "
        f"(torch.profiler, mean over {r['profiled']} more batches, profiler overhead "
        f"included):",
        "",
        "| piece | seconds | share |",
        "|---|---|---|",
    ]
    for k, v in r["per_batch"].items():
        lines.append(f"| {k} | {v:.3f} | {100 * v / max(total, 1e-12):.0f}% |")
    lines.append(f"| **total** | {total:.3f} | 100% |")
    for title, rows in r["top_ops"].items():
        lines += ["", f"| {title} | seconds per batch |", "|---|---|"]
        lines += [f"| `{name}` | {sec:.3f} |" for name, sec in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="baby")
    ap.add_argument("--out", default=str(ROOT / "data" / "standin"),
                    help="where the stand-in dataset folder is made (default data/standin)")
    ap.add_argument("--source", default="../shared/data/amazon",
                    help="folder holding <dataset>/{train,valid,test}.npy")
    ap.add_argument("--batches", type=int, default=None,
                    help="time only this many batches and project the epoch time")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="time with wall-clock or process CPU seconds (steadier on a shared "
                         "machine with --threads 1)")
    ap.add_argument("--profile", type=int, default=3,
                    help="batches to run under torch.profiler after the timed ones (default 3)")
    ap.add_argument("--plain-step", action="store_true",
                    help="hold every gradient until opt.step() (no steps in the backward)")
    ap.add_argument("--graph-only", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.graph_only:
        _prepare_graph(Path(args.graph_only), args.dataset)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    r = run(args.dataset, Path(args.out), args.source, args.batches, args.clock,
            args.profile, args.plain_step)
    print(f"\nseconds per epoch: {r['epoch_s']:.1f}   seconds per evaluation: {r['eval_s']:.2f}"
          f"   peak RSS in training: {r['rss_gb']:.2f} GB   valid Recall@20: {r['valid_recall20']:.4f}")
    print("\n" + markdown(r))


if __name__ == "__main__":
    main()
