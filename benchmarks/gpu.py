"""Time REARM on Baby, Sports and Clothing with the paper presets, on a GPU (or the CPU).

One run does everything: it makes the stand-in datasets (real splits with the stand-in
features the authors' code was timed with: uniform [0, 1) from ``default_rng(7)``, image
first; ``benchmarks/standin_features.py``), builds each relation graph into its cache, then
times each dataset in a fresh process:

- start-up: from the process start (the launch of ``python``) to the first training batch,
  with the graph cache on disk; what the authors' code calls its set-up;
- seconds per training epoch, for each of ``--epochs`` epochs (the first includes the
  device warm-up; the table gives the median);
- seconds per full validation evaluation (median of three);
- peak GPU memory, ``torch.cuda.max_memory_allocated`` (the CPU's peak RSS on ``--device cpu``).

``--fit DATASET`` then trains that dataset with ``rearm_dgl.train.fit`` (validation every
epoch, the preset's early stopping) until it stops or ``--fit-budget-s`` runs out, and says
which came first.

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


def _prepare(names: list[str], work: Path, source: str, recipe: str, seed: int
             ) -> dict[str, dict]:
    """Stand-in datasets and their graph caches; seconds spent on each."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from standin_features import prepare

    from rearm_dgl.config import build_config
    from rearm_dgl.data import load_dataset
    from rearm_dgl.graphs import load_or_build_graph

    out = {}
    for name in names:
        t0 = time.perf_counter()
        path = prepare(name, work, source_root=source, seed=seed, recipe=recipe)
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
    from rearm_dgl.tracking import peak_memory
    from rearm_dgl.train import training_parts

    device = torch.device(device_name)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    cfg = build_config("rearm", path)
    data = load_dataset(cfg.data)
    graph = load_or_build_graph(data, cfg.graph)
    model, opt, sampler, data = training_parts(cfg, data, graph, device)
    max_batches = 2 if quick else None

    epoch_s, startup_s, n_batches = [], None, 0
    for epoch in range(1, epochs + 1):
        model.train()
        sync()
        t0 = time.time()
        total = None
        for i, batch in enumerate(sampler.batches(epoch, device)):
            if startup_s is None:
                startup_s = time.time() - t_launch
            out = model.loss(batch)
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
    rss, gpu_bytes = peak_memory(device)
    peak = gpu_bytes if cuda else rss
    return {
        "dataset": name, "device": str(device), "users": data.n_users, "items": data.n_items,
        "batches_per_epoch": n_batches, "epoch_s": epoch_s, "eval_s": eval_s,
        "startup_s": startup_s, "peak_bytes": int(peak),
        "peak_kind": "max_memory_allocated" if cuda else "peak RSS",
        "device_name": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__, "valid_recall20": result.metrics.get("Recall@20"),
    }


class _OutOfTime(Exception):
    """Raised by the budget callback to end a training run at a validated epoch."""


def _fit_dataset(path: str, name: str, device_name: str, budget_s: float, run_dir: str,
                 t_launch: float, quick: bool) -> dict:
    """In the child process: ``fit`` with the paper preset until its early stop or the budget.

    The budget is checked after each validated epoch; a run that reaches it reports how far
    it got (epochs, best epoch, epochs without gain) instead of a test result. ``quick``
    caps the run at 3 epochs.
    """
    from rearm_dgl.config import build_config
    from rearm_dgl.train import fit

    cfg = build_config("rearm", path, overrides=[f"train.device={device_name}",
                                                  "train.keep_checkpoints=none"]
                       + (["train.epochs=3"] if quick else []))
    t0 = time.time()
    epochs: list[tuple[float, str]] = []

    def budget(epoch: int, _valid: dict) -> None:
        if time.time() - t0 > budget_s:
            raise _OutOfTime(epoch)

    def progress(line: str) -> None:
        epochs.append((time.time() - t0, line))
        if len(epochs) % 10 == 1:
            _log(f"  {name} fit {time.time() - t0:.0f} s: {line}")

    out = {"dataset": name, "device": device_name, "budget_s": budget_s,
           "startup_to_fit_s": t0 - t_launch}
    try:
        res = fit(cfg, run_dir=run_dir, quiet=True, progress=progress, callbacks=[budget])
    except _OutOfTime:
        out.update(stop_reason="budget", epochs_run=len(epochs), wall_s=time.time() - t0,
                   last_line=epochs[-1][1] if epochs else "")
        return out
    out.update(stop_reason=res.stop_reason, epochs_run=res.epochs_run,
               best_epoch=res.best_epoch, wall_s=time.time() - t0, valid=res.valid,
               test=res.test, features_note=res.features_note)
    return out


def _fit_markdown(fit: dict) -> list[str]:
    per_epoch = fit["wall_s"] / max(fit["epochs_run"], 1)
    head = (f"Trained to its early stop ({fit['dataset']}, paper preset, validation every "
            f"epoch): ")
    if fit["stop_reason"] == "budget":
        return [head + f"not reached within the {fit['budget_s']:.0f} s budget: "
                f"{fit['epochs_run']} epochs in {fit['wall_s']:.0f} s ({per_epoch:.2f} s per "
                f"epoch with its evaluation); last: {fit['last_line']}."]
    rec = fit["test"].get("Recall@20")
    return [head + f"{fit['stop_reason']} after {fit['epochs_run']} epochs (best "
            f"{fit['best_epoch']}) in {fit['wall_s']:.0f} s ({fit['wall_s'] / 60:.1f} min, "
            f"{per_epoch:.2f} s per epoch with its evaluation); test Recall@20 "
            f"{rec:.4f} on stand-in features."]


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
    ap.add_argument("--recipe", default="uniform", choices=("uniform", "factor"),
                    help="stand-in features: uniform (default; the recipe the authors' code "
                         "was timed with) or factor (benchmarks/standin_features.py)")
    ap.add_argument("--feature-seed", type=int, default=7,
                    help="seed of the stand-in features (default 7, as the authors' timing)")
    ap.add_argument("--work", default=str(ROOT / "data" / "standin"),
                    help="where the stand-in datasets and graph caches go")
    ap.add_argument("--out", default=".", help="folder for gpu_results.{json,md}")
    ap.add_argument("--budget-s", type=float, default=450.0,
                    help="start no dataset after this many seconds (default 450)")
    ap.add_argument("--fit", metavar="DATASET", default=None,
                    help="after the timings, train this dataset to its early stop")
    ap.add_argument("--fit-budget-s", type=float, default=300.0,
                    help="stop that training after this many seconds (default 300)")
    ap.add_argument("--child", nargs=2, metavar=("PATH", "NAME"), help=argparse.SUPPRESS)
    ap.add_argument("--child-fit", nargs=3, metavar=("PATH", "NAME", "RUN_DIR"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--t-launch", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        r = _time_dataset(args.child[0], args.child[1], args.device, args.epochs, args.quick,
                          args.t_launch)
        print("RESULT " + json.dumps(r), flush=True)
        return 0
    if args.child_fit:
        r = _fit_dataset(*args.child_fit[:2], args.device, args.fit_budget_s,
                         args.child_fit[2], args.t_launch, args.quick)
        print("RESULT " + json.dumps(r), flush=True)
        return 0

    t_start = time.perf_counter()
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("gpu.py: --device cuda but torch sees no CUDA device; use --device cpu",
                  file=sys.stderr)
            return 2
    names = list(dict.fromkeys(args.datasets + ([args.fit] if args.fit else [])))
    prep = _prepare(names, Path(args.work), args.source, args.recipe, args.feature_seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    fit_result: dict | None = None

    def save() -> str:
        table = _markdown(results, prep, args.quick)
        if fit_result is not None:
            table += "\n\n" + "\n".join(_fit_markdown(fit_result))
        atomic_write_json(out / "gpu_results.json",
                          {"prepare": prep, "results": results, "fit": fit_result})
        atomic_write_text(out / "gpu_results.md", table + "\n")
        return table

    def child(extra: list[str]) -> dict | None:
        cmd = [sys.executable, __file__, *extra, "--device", args.device,
               "--t-launch", repr(time.time())]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        sys.stdout.write(proc.stdout.replace("RESULT ", "  result: ", 1))
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-6000:])
            _log(f"{extra[1]}: the child process failed (exit {proc.returncode})")
            return None
        line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
        return json.loads(line.removeprefix("RESULT "))

    for name in args.datasets:
        if time.perf_counter() - t_start > args.budget_s:
            _log(f"{name}: skipped, the {args.budget_s:.0f} s budget is spent")
            continue
        r = child(["--child", prep[name]["path"], name, "--epochs", str(args.epochs)]
                  + (["--quick"] if args.quick else []))
        if r is not None:
            results.append(r)
            save()
    if args.fit:
        run_dir = Path(args.work) / "fit" / f"{args.fit}-{time.strftime('%Y%m%d-%H%M%S')}"
        fit_result = child(["--child-fit", prep[args.fit]["path"], args.fit, str(run_dir),
                            "--fit-budget-s", str(args.fit_budget_s)]
                           + (["--quick"] if args.quick else []))
    table = save()
    _log("\n" + table)
    _log(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    ok = len(results) == len(args.datasets) and (fit_result is not None or not args.fit)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
