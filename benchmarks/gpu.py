"""Time REARM on Baby, Sports and Clothing with the paper presets, on a GPU (or the CPU).

One run does everything: it makes the stand-in datasets (real splits, seeded stand-in
features, ``benchmarks/standin_features.py``), builds each relation graph into its cache,
then times each dataset in a fresh process:

- start-up: from the process start (the launch of ``python``) to the first training batch,
  with the graph cache on disk; what the authors' code calls its set-up;
- seconds per training epoch, for each of ``--epochs`` epochs (the first includes the
  device warm-up; the table gives the median);
- seconds per full validation evaluation (median of three);
- peak GPU memory, ``torch.cuda.max_memory_allocated`` (the CPU's peak RSS on ``--device cpu``).

The results go to ``<out>/gpu_results.json`` and ``<out>/gpu_results.md``, a Markdown table
beside the authors' code on an H200 (issue 12). ``--budget-s`` stops before a dataset that
would start after the budget, so a fixed-length device session always returns a table.

    benchmarks/gpu.sh --out "$OUT"                       # on the GPU machine
    python benchmarks/gpu.py --device cpu --quick        # the CPU check (a test runs it)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rearm_dgl.io_utils import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ("baby", "sports", "clothing")
# The authors' code on an H200 with uniform stand-in features (issue 12): s/epoch, eval s
# (range), start-up s, peak GPU GiB.
AUTHORS = {
    "baby": (5.3, "1.3-1.8", 41, 3.1),
    "sports": (18.0, "2.1-3.1", 84, 7.4),
    "clothing": (22.0, "1.7-2.3", 91, 8.4),
}
GOALS = "at least 5x faster per epoch than the authors' code, start-up <= 15 s"


def _log(msg: str) -> None:
    print(msg, flush=True)


def _prepare(names: list[str], work: Path, source: str) -> dict[str, dict]:
    """Stand-in datasets and their graph caches; seconds spent on each."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from standin_features import prepare

    from rearm_dgl.config import build_config
    from rearm_dgl.data import load_dataset
    from rearm_dgl.graphs import load_or_build_graph

    out = {}
    for name in names:
        t0 = time.perf_counter()
        path = prepare(name, work, source_root=source)
        t1 = time.perf_counter()
        cfg = build_config("rearm", str(path))  # the preset of the folder's name
        load_or_build_graph(load_dataset(cfg.data), cfg.graph)
        t2 = time.perf_counter()
        out[name] = {"path": str(path), "features_s": t1 - t0, "graph_s": t2 - t1}
        _log(f"{name}: stand-in features {t1 - t0:.1f} s, graph {t2 - t1:.1f} s")
    return out


def _time_dataset(path: str, name: str, device_name: str, epochs: int, quick: bool,
                  t_launch: float) -> dict:
    """In the child process: start-up, epochs, evaluations, peak memory of one dataset."""
    import torch

    from rearm_dgl.config import build_config
    from rearm_dgl.data import load_dataset
    from rearm_dgl.evaluation.protocol import evaluate, model_scorer
    from rearm_dgl.graphs import load_or_build_graph
    from rearm_dgl.models import registry
    from rearm_dgl.sampling import BPRSampler

    device = torch.device(device_name)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    cfg = build_config("rearm", path)
    data = load_dataset(cfg.data)
    graph = load_or_build_graph(data, cfg.graph)
    torch.manual_seed(cfg.train.seed)
    model = registry.get("rearm").build(cfg.params, data, graph, device)
    opt = model.configure_optimizer(cfg.train.lr)
    sampler = BPRSampler(data, cfg.train.negatives, cfg.train.batch_size, cfg.train.seed)
    max_batches = 2 if quick else None

    epoch_s, startup_s, n_batches = [], None, 0
    for epoch in range(1, epochs + 1):
        model.train()
        sync()
        t0 = time.time()
        total = None
        for i, batch in enumerate(sampler.batches(epoch)):
            if startup_s is None:
                startup_s = time.time() - t_launch
            out = model.loss(batch.to(device))
            opt.zero_grad(set_to_none=True)
            out.total.backward()
            opt.step()
            loss = out.total.detach()
            total = loss if total is None else total + loss  # no host sync per batch
            n_batches = i + 1
            if max_batches is not None and n_batches >= max_batches:
                break
        mean_loss = float(total) / n_batches  # the epoch's one host read
        sync()
        epoch_s.append(time.time() - t0)
        _log(f"  {name} epoch {epoch}: {epoch_s[-1]:.2f} s ({n_batches} batches, "
             f"loss {mean_loss:.4f})")

    eval_s = []
    model.eval()
    for _ in range(1 if quick else 3):
        sync()
        t0 = time.time()
        result = evaluate(model_scorer(model), data, "valid", cfg.eval, device)
        sync()
        eval_s.append(time.time() - t0)
    peak = (torch.cuda.max_memory_allocated(device) if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {
        "dataset": name, "device": str(device), "users": data.n_users, "items": data.n_items,
        "batches_per_epoch": n_batches, "epoch_s": epoch_s, "eval_s": eval_s,
        "startup_s": startup_s, "peak_bytes": int(peak),
        "peak_kind": "max_memory_allocated" if cuda else "peak RSS",
        "device_name": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__, "valid_recall20": result.metrics.get("Recall@20"),
    }


def _markdown(results: list[dict], prep: dict[str, dict], quick: bool) -> str:
    first = results[0] if results else {}
    gpu = first.get("peak_kind") == "max_memory_allocated"
    mem = "peak GPU alloc GiB" if gpu else "peak RSS GiB"
    lines = [
        f"REARM, paper presets, {first.get('device_name', '?')}, torch "
        f"{first.get('torch', '?')}" + (" (quick mode: 2 batches per epoch, not figures)"
                                         if quick else "") + ".",
        "",
        f"| dataset | s/epoch (median; each) | eval s | start-up s | {mem} | graph build s "
        f"| authors: s/epoch, eval s, start-up s, GiB | speed-up per epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ep = statistics.median(r["epoch_s"])
        a = AUTHORS.get(r["dataset"])
        theirs = f"{a[0]}, {a[1]}, {a[2]}, {a[3]}" if a else "-"
        speed = f"{a[0] / ep:.1f}x" if a and not quick else "-"
        lines.append(
            f"| {r['dataset']} | {ep:.2f} ({', '.join(f'{s:.2f}' for s in r['epoch_s'])}) "
            f"| {statistics.median(r['eval_s']):.2f} | {r['startup_s']:.1f} "
            f"| {r['peak_bytes'] / 2**30:.2f} | {prep[r['dataset']]['graph_s']:.1f} "
            f"| {theirs} | {speed} |")
    lines += ["", f"Goals: {GOALS}."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="2 batches per epoch, one evaluation: checks the script, times nothing")
    ap.add_argument("--source", default="../shared/data/amazon",
                    help="folder holding <dataset>/{train,valid,test}.npy")
    ap.add_argument("--work", default=str(ROOT / "data" / "standin"),
                    help="where the stand-in datasets and graph caches go")
    ap.add_argument("--out", default=".", help="folder for gpu_results.{json,md}")
    ap.add_argument("--budget-s", type=float, default=450.0,
                    help="start no dataset after this many seconds (default 450)")
    ap.add_argument("--child", nargs=2, metavar=("PATH", "NAME"), help=argparse.SUPPRESS)
    ap.add_argument("--t-launch", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        r = _time_dataset(args.child[0], args.child[1], args.device, args.epochs, args.quick,
                          args.t_launch)
        print("RESULT " + json.dumps(r), flush=True)
        return 0

    t_start = time.perf_counter()
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("gpu.py: --device cuda but torch sees no CUDA device; use --device cpu",
                  file=sys.stderr)
            return 2
    prep = _prepare(args.datasets, Path(args.work), args.source)
    results = []
    for name in args.datasets:
        if time.perf_counter() - t_start > args.budget_s:
            _log(f"{name}: skipped, the {args.budget_s:.0f} s budget is spent")
            continue
        cmd = [sys.executable, __file__, "--child", prep[name]["path"], name,
               "--device", args.device, "--epochs", str(args.epochs),
               "--t-launch", repr(time.time())] + (["--quick"] if args.quick else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        sys.stdout.write(proc.stdout.replace("RESULT ", "  result: ", 1))
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            _log(f"{name}: the timing process failed (exit {proc.returncode})")
            continue
        line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
        results.append(json.loads(line.removeprefix("RESULT ")))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = _markdown(results, prep, args.quick)
    atomic_write_json(out / "gpu_results.json", {"prepare": prep, "results": results})
    atomic_write_text(out / "gpu_results.md", table + "\n")
    _log("\n" + table)
    _log(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    return 0 if len(results) == len(args.datasets) else 1


if __name__ == "__main__":
    sys.exit(main())
