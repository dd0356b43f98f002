"""REARM at the size of MMRec's Amazon Electronics, on one machine.

Three steps, each in its own process so each peak RSS is its own:

1. ``generate``: a seeded synthetic dataset with Elec's shape: 192,403 users, 63,001 items,
   1,689,188 interactions (every user at least 5, every item at least 1 training
   interaction), power-law item popularity and heavy-tailed user degrees, a per-user 8:1:1
   split (at least one valid and one test item per user), and seeded stand-in features
   (uniform 4096-d image, Gaussian 384-d text).
2. ``graph``: the relation heterograph at Elec-like settings (user k 40, item k 10): build
   seconds and peak RSS per relation, then the cache write.
3. ``train``: REARM (Baby's hyperparameters, batch 2048) for a few batches on that graph:
   seconds per batch and peak RSS, with the memory budget piece by piece.

    python benchmarks/scale.py                    # all three, figures as Markdown
    python benchmarks/scale.py --batches 3 --threads 2

Targets (issue 12): graph build <= 15 min and <= 12 GB; training fits in 22 GB (GB = 10^9
bytes; the script measures GiB and prints both).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
N_USERS, N_ITEMS, N_INTERACTIONS = 192_403, 63_001, 1_689_188
IMAGE_DIM, TEXT_DIM = 4096, 384
USER_K, ITEM_K = 40, 10
MIN_DEGREE = 5
POPULARITY_EXPONENT = 0.9  # item i of popularity rank r is drawn with weight (r + 10)^-0.9
SEED = 2025
TARGETS = {"graph_s": 15 * 60, "graph_gb": 12.0, "train_gb": 22.0}  # GB = 10^9 bytes
GB_PER_GIB = 2**30 / 1e9  # the RSS figures are GiB; the targets are GB


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def _rss_gb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


# ------------------------------------------------------------------------------ generate


def interactions(rng: np.random.Generator, n_users: int = N_USERS, n_items: int = N_ITEMS,
                 n: int = N_INTERACTIONS) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of ``n`` distinct pairs, sorted by user; vectorised draws.

    User degrees are ``MIN_DEGREE`` plus a multinomial share with log-normal weights;
    every item first gets one interaction from a random user slot (so every item has a
    user), then the remaining slots draw items by power-law popularity, redrawing the
    slots whose pair came out twice until all pairs are distinct.
    """
    weights = rng.lognormal(0.0, 1.0, n_users)
    degree = MIN_DEGREE + rng.multinomial(n - MIN_DEGREE * n_users, weights / weights.sum())
    popularity = (rng.permutation(n_items) + 10.0) ** -POPULARITY_EXPONENT
    popularity /= popularity.sum()

    slots = rng.permutation(np.repeat(np.arange(n_users, dtype=np.int64), degree))  # (n,)
    items = np.empty(n, dtype=np.int64)
    items[:n_items] = np.arange(n_items)  # one slot per item
    items[n_items:] = rng.choice(n_items, n - n_items, p=popularity)
    fixed = np.zeros(n, dtype=bool)
    fixed[:n_items] = True
    while True:
        keys = slots * n_items + items
        # Keep the first of each duplicate pair, preferring the item-coverage slots.
        order = np.lexsort((~fixed, keys))
        dup = np.zeros(n, dtype=bool)
        dup[order[1:]] = keys[order[1:]] == keys[order[:-1]]
        if not dup.any():
            break
        items[dup] = rng.choice(n_items, int(dup.sum()), p=popularity)
    order = np.lexsort((items, slots))
    return slots[order], items[order]


def split_per_user(users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """0 train / 1 valid / 2 test per pair (pairs sorted by user): 8:1:1 within each user.

    Each user keeps ``max(1, round(deg / 10))`` pairs for valid and as many for test, chosen
    at random; every item's lowest-index pair stays in training so no item is missing there.
    """
    n = users.size
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    degree = np.diff(np.r_[starts, n])
    held = np.maximum(1, np.rint(degree / 10).astype(np.int64))
    # Random rank of each pair within its user.
    order = np.lexsort((rng.random(n), users))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, degree)
    deg, h = np.repeat(degree, degree), np.repeat(held, degree)
    label = np.where(rank < deg - 2 * h, 0, np.where(rank < deg - h, 1, 2))
    return label


def generate(out: Path, seed: int = SEED) -> Path:
    """Write the synthetic dataset in the REARM layout under ``out`` (skipped if there)."""
    from rearm_dgl.data.io import FEATURES_JSON, IMAGE_FILE, TEXT_FILE, save_npy
    from rearm_dgl.io_utils import atomic_write_json

    meta = {"stand_in": True, "seed": seed, "note": (
        f"synthetic Elec-shaped interactions and seeded stand-in features (uniform "
        f"{IMAGE_DIM}-d image, Gaussian {TEXT_DIM}-d text), no real content")}
    if (out / FEATURES_JSON).exists() and json.loads((out / FEATURES_JSON).read_text()) == meta:
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    users, items = interactions(rng)
    label = split_per_user(users, rng)
    # Items whose pairs all went to valid/test: move the first of them back to training.
    in_train = np.zeros(N_ITEMS, dtype=bool)
    in_train[items[label == 0]] = True
    missing = ~in_train[items]
    first = np.unique(items[missing], return_index=True)[1]
    label[np.flatnonzero(missing)[first]] = 0
    for value, name in enumerate(("train", "valid", "test")):
        pick = label == value
        save_npy(out / f"{name}.npy", np.stack([users[pick], items[pick]]))
    image = np.empty((N_ITEMS, IMAGE_DIM), dtype=np.float32)
    for a in range(0, N_ITEMS, 8192):  # bounded temporaries
        image[a:a + 8192] = rng.random((min(8192, N_ITEMS - a), IMAGE_DIM), dtype=np.float32)
    save_npy(out / IMAGE_FILE, image)
    del image
    save_npy(out / TEXT_FILE, rng.standard_normal((N_ITEMS, TEXT_DIM), dtype=np.float32))
    atomic_write_json(out / FEATURES_JSON, meta)
    return out


# ------------------------------------------------------------------------------ graph


def _graph_config():
    from rearm_dgl.config import GraphConfig

    return GraphConfig(user_knn_k=USER_K, item_knn_k=ITEM_K)


def measure_graph(folder: Path) -> dict:
    """Build the heterograph with per-relation seconds and peak RSS; write its cache."""
    sys.path.insert(0, str(HERE))
    from graphs import _Timings  # noqa: PLC0415 (benchmark-local module)

    from rearm_dgl._dgl import dgl
    from rearm_dgl.config import DataConfig
    from rearm_dgl.data import load_dataset
    from rearm_dgl.graphs import build_graph
    from rearm_dgl.graphs.cache import cache_path
    from rearm_dgl.io_utils import atomic_path

    data = load_dataset(DataConfig(dataset=str(folder)))
    rss_loaded = _rss_gb()
    cfg = _graph_config()
    timings = _Timings()
    t = time.perf_counter()
    graph = build_graph(data, cfg, timings=timings)
    build_s = time.perf_counter() - t
    with atomic_path(cache_path(data, cfg), suffix=".bin") as tmp:
        dgl.save_graphs(str(tmp), [graph])
    return {
        "users": data.n_users, "items": data.n_items, "train": int(data.train.shape[1]),
        "valid": int(data.valid.shape[1]), "test": int(data.test.shape[1]),
        "build_s": build_s, "peak_gb": _peak_gb(), "rss_loaded_gb": rss_loaded,
        "relations": {k: {"seconds": v, "peak_gb": timings.peak[k]} for k, v in timings.items()},
        "edges": int(graph.num_edges()),
    }


# ------------------------------------------------------------------------------ train


def _budget(model, data, graph, plain_step: bool) -> dict[str, float]:
    """GiB held by each piece at steady state: tables, their gradients and AdamW states."""
    from rearm_dgl.optim import CPU_ROW_BLOCK_BYTES, EAGER_MIN_NUMEL

    gib = 2.0**-30
    tables = ("item_image", "item_text", "user_image", "user_text")
    params = dict(model.named_parameters())
    out = {f"parameter {name} {tuple(params[name].shape)}": params[name].nbytes * gib
           for name in tables}
    rest = sum(p.nbytes for n, p in params.items() if n not in tables) * gib
    out["other parameters"] = rest
    total = sum(p.nbytes for p in params.values()) * gib
    if plain_step:
        out["gradients (all parameters, after backward)"] = total
    else:  # the large ones are stepped and freed in the backward, one at a time
        # The feature tables never hold a whole gradient: they are stepped by row blocks.
        out["gradient rows of a feature table (one block at a time)"] = CPU_ROW_BLOCK_BYTES * gib
        large = [p.nbytes for n, p in params.items()
                 if p.numel() >= EAGER_MIN_NUMEL and n not in tables]
        out["gradient of the largest other large parameter"] = max(large, default=0) * gib
        out["gradients of the small parameters"] = sum(
            p.nbytes for p in params.values() if p.numel() < EAGER_MIN_NUMEL) * gib
    out["AdamW exp_avg + exp_avg_sq"] = 2 * total
    out["dataset splits (features released)"] = sum(
        a.nbytes for a in (data.train, data.valid, data.test)) * gib
    out["relation graph (edges and weights)"] = sum(
        graph.num_edges(et) * 8 * 3 for et in graph.canonical_etypes) * gib
    return out


def measure_train(folder: Path, batches: int, plain_step: bool = False) -> dict:
    """REARM for ``batches`` batches: seconds per batch, RSS at each stage, the budget.

    ``plain_step`` holds every gradient until ``opt.step()`` instead of stepping the large
    parameters in the backward (:func:`rearm_dgl.optim.step_in_backward`), for comparison.
    """
    import torch

    from rearm_dgl.config import DataConfig, build_config
    from rearm_dgl.data import load_dataset
    from rearm_dgl.graphs import load_or_build_graph
    from rearm_dgl.train import training_parts

    cfg = build_config("rearm", "baby")  # Baby's hyperparameters and schedule
    data = load_dataset(DataConfig(dataset=str(folder)))
    graph = load_or_build_graph(data, _graph_config())
    rss = {"data and graph": _rss_gb()}
    # training_parts hands back the dataset without its features (1.1 GB at Elec size): the
    # model holds its own trained copies, and sampling and evaluation use the splits only.
    model, opt, sampler, data = training_parts(cfg, data, graph, torch.device("cpu"),
                                               step_large_in_backward=not plain_step)
    rss["peak while building"] = _peak_gb()
    gc.collect()
    rss["model built, dataset features released"] = _rss_gb()
    model.train()
    times = []
    for i, batch in enumerate(sampler.batches(1)):
        if i >= batches:
            break
        t0 = time.perf_counter()
        out = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        if i == 0:
            rss["after the first backward"] = _rss_gb()
        opt.step()
        times.append(time.perf_counter() - t0)
        if i == 0:
            rss["after the first step"] = _rss_gb()
    rss["peak in training"] = _peak_gb()
    return {"batch_s": times, "rss_gb": rss, "peak_gb": _peak_gb(),
            "budget_gb": _budget(model, data, graph, plain_step),
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "step_in_backward": not plain_step,
            "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------ report


def markdown(gen_s: float, g: dict, t: dict) -> str:
    """The figures as a Markdown section for benchmarks/RESULTS.md."""
    lines = [
        f"{g['users']:,} users, {g['items']:,} items, {g['train']:,} / {g['valid']:,} / "
        f"{g['test']:,} train / valid / test pairs (generated in {gen_s:.0f} s); "
        f"user k {USER_K}, item k {ITEM_K}; {g['edges']:,} edges.",
        "",
        "| measure | value | target | met |",
        "|---|---|---|---|",
        f"| graph build s | {g['build_s']:.0f} | <= {TARGETS['graph_s']} "
        f"| {'yes' if g['build_s'] <= TARGETS['graph_s'] else '**no**'} |",
        f"| graph build peak RSS, GiB (GB) | {g['peak_gb']:.2f} "
        f"({g['peak_gb'] * GB_PER_GIB:.2f}) | <= {TARGETS['graph_gb']:.0f} GB "
        f"| {'yes' if g['peak_gb'] * GB_PER_GIB <= TARGETS['graph_gb'] else '**no**'} |",
        f"| training s per batch (median of {len(t['batch_s'])}) "
        f"| {np.median(t['batch_s']):.1f} | - | - |",
        f"| training peak RSS, GiB (GB) | {t['peak_gb']:.2f} "
        f"({t['peak_gb'] * GB_PER_GIB:.2f}) | <= {TARGETS['train_gb']:.0f} GB "
        f"| {'yes' if t['peak_gb'] * GB_PER_GIB <= TARGETS['train_gb'] else '**no**'} |",
        "",
        "Graph build per relation (seconds, peak RSS GiB by its end):",
        "",
        "| relation | s | peak GiB |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {v['seconds']:.1f} | {v['peak_gb']:.2f} |"
              for k, v in g["relations"].items()]
    lines += ["", "Training memory (GiB): " + ", ".join(
        f"{k} {v:.2f}" for k, v in t["rss_gb"].items()) + ".", "",
        "| piece (steady state) | GiB |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in t["budget_gb"].items()]
    lines.append(f"| **sum** | {sum(t['budget_gb'].values()):.2f} |")
    lines.append(f"\nBatch seconds: {', '.join(f'{s:.1f}' for s in t['batch_s'])} "
                 f"({t['threads']} threads, {t['n_parameters'] / 1e6:.0f} M parameters).")
    return "\n".join(lines)


def _child(step: str, folder: Path, extra: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--step", step, "--data", str(folder),
                           *extra], capture_output=True, text=True)
    if proc.returncode != 0:
        how = (f"was killed by signal {-proc.returncode} (out of memory?)"
               if proc.returncode < 0 else f"failed (exit {proc.returncode})")
        raise SystemExit(f"scale.py: the {step} step {how}:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(HERE.parent / "data" / "elec_synth"),
                    help="dataset folder (made by the generate step)")
    ap.add_argument("--batches", type=int, default=3, help="training batches to time")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--step", choices=("generate", "graph", "train"), default=None,
                    help="run one step in this process (default: all, each in a child)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    ap.add_argument("--plain-step", action="store_true",
                    help="train without stepping large parameters in the backward")
    args = ap.parse_args(argv)
    folder = Path(args.data)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.step == "generate":
        t = time.perf_counter()
        generate(folder)
        print(json.dumps({"seconds": time.perf_counter() - t, "peak_gb": _peak_gb()}))
        return 0
    if args.step == "graph":
        print(json.dumps(measure_graph(folder)))
        return 0
    if args.step == "train":
        print(json.dumps(measure_train(folder, args.batches, args.plain_step)))
        return 0

    extra = ["--threads", str(args.threads)] if args.threads else []
    gen = _child("generate", folder, [])
    print(f"generated {folder} in {gen['seconds']:.0f} s", flush=True)
    g = _child("graph", folder, extra)
    print(f"graph built in {g['build_s']:.0f} s, peak {g['peak_gb']:.2f} GiB", flush=True)
    # Kept at once: a failed or killed training step must not lose a 15-minute build's figures.
    print("graph figures: " + json.dumps(g), flush=True)
    t = _child("train", folder, extra + ["--batches", str(args.batches)]
               + (["--plain-step"] if args.plain_step else []))
    text = markdown(gen["seconds"], g, t)
    print("\n" + text)
    if args.json:
        Path(args.json).write_text(json.dumps({"generate": gen, "graph": g, "train": t},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
