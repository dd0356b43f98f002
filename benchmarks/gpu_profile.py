"""Where a REARM training batch's time goes on a GPU: start-up phases, sampler, step, kernels.

``benchmarks/gpu.py`` gives the per-epoch figures; this script splits one dataset's epoch:

- start-up phases from the process launch: imports, dataset, graph cache, model build and
  copy to the device, first batch;
- the BPR sampler alone (one epoch of batches on the CPU, and their copies to the device);
- the model step alone (forward, backward, AdamW) over batches already on the device;
- ``torch.profiler`` over a few steps: host (CPU) time and device (kernel) time per labelled
  piece (``rearm.projections``, ... , ``backward``, ``optimiser``), kernel launches per step,
  and the operators with the most host and device time.

A step whose host time is close to its wall time and far above its kernel time is bound by
the host issuing kernels, not by the GPU.

    python benchmarks/gpu_profile.py --dataset baby --source data/amazon --out "$OUT"
    python benchmarks/gpu_profile.py --device cpu --steps 2 --dataset DIR   # a CPU check
"""

from __future__ import annotations

import time

T_LAUNCH = time.time()  # as near the process start as this module can see

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOP = 15


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="baby", help="a name under --source, or a folder")
    ap.add_argument("--source", default="../shared/data/amazon")
    ap.add_argument("--work", default=str(ROOT / "data" / "standin"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=5, help="profiled steps (default 5)")
    ap.add_argument("--out", default=".")
    args = ap.parse_args(argv)
    phases: dict[str, float] = {}

    def mark(name: str) -> None:
        phases[name] = time.time() - T_LAUNCH

    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from rearm_dgl.config import build_config
    from rearm_dgl.data import load_dataset
    from rearm_dgl.graphs import load_or_build_graph
    from rearm_dgl.train import training_parts

    mark("imports")
    path = Path(args.dataset)
    if not path.is_dir():
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from standin_features import prepare

        path = prepare(args.dataset, args.work, source_root=args.source, seed=7,
                       recipe="uniform")
    device = torch.device(args.device)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    cfg = build_config("rearm", str(path))
    data = load_dataset(cfg.data)
    mark("dataset")
    graph = load_or_build_graph(data, cfg.graph)
    mark("graph")
    model, opt, sampler, data = training_parts(cfg, data, graph, device)
    sync()
    mark("model on device")

    def step(batch) -> None:
        out = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        with record_function("backward"):
            out.total.backward()
        with record_function("optimiser"):
            opt.step()

    model.train()
    for i, batch in enumerate(sampler.batches(0, device)):
        step(batch)
        if i == 0:
            sync()
            mark("first step")
        if i >= 9:
            break
    sync()

    t0 = time.perf_counter()
    host_batches = list(sampler.batches(1))
    t1 = time.perf_counter()
    dev_batches = [b.to(device) for b in host_batches]
    sync()
    t2 = time.perf_counter()
    step_s = []
    for _ in range(2):
        sync()
        ts = time.perf_counter()
        for b in dev_batches:
            step(b)
        sync()
        step_s.append((time.perf_counter() - ts) / len(dev_batches))

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    n = min(args.steps, len(dev_batches))
    sync()
    with profile(activities=activities) as prof:
        for b in dev_batches[:n]:
            step(b)
        sync()
    rows = []
    launches = 0
    for ev in prof.key_averages():
        dev_self = getattr(ev, "self_device_time_total", 0.0) if cuda else 0.0
        dev_total = getattr(ev, "device_time_total", 0.0) if cuda else 0.0
        if ev.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"):
            launches += ev.count
        rows.append({"name": ev.key, "count": ev.count / n,
                     "cpu_total_ms": ev.cpu_time_total / 1e3 / n,
                     "cpu_self_ms": ev.self_cpu_time_total / 1e3 / n,
                     "device_total_ms": dev_total / 1e3 / n,
                     "device_self_ms": dev_self / 1e3 / n})
    labels = {r["name"]: r for r in rows
              if r["name"].startswith("rearm.") or r["name"] in ("backward", "optimiser")}
    kernels_ms = sum(r["device_self_ms"] for r in rows)
    result = {
        "dataset": path.name, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__, "batches_per_epoch": len(host_batches),
        "startup_phases_s": phases,
        "sampler_epoch_s": t1 - t0, "copy_to_device_epoch_s": t2 - t1,
        "step_s": step_s, "step_s_median": statistics.median(step_s),
        "profiled_steps": n, "kernel_ms_per_step": kernels_ms,
        "kernel_launches_per_step": launches / n,
        "labels": labels,
        "top_host_self": sorted(rows, key=lambda r: -r["cpu_self_ms"])[:TOP],
        "top_device_self": sorted(rows, key=lambda r: -r["device_self_ms"])[:TOP],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"gpu_profile_{path.name}.json").write_text(json.dumps(result, indent=1))
    print(f"{path.name} on {result['device_name']}: start-up phases (s from launch) "
          + ", ".join(f"{k} {v:.1f}" for k, v in phases.items()))
    print(f"sampler {t1 - t0:.2f} s per epoch ({len(host_batches)} batches), copies "
          f"{t2 - t1:.3f} s; step alone {1e3 * result['step_s_median']:.1f} ms "
          f"({', '.join(f'{1e3 * s:.1f}' for s in step_s)}); kernels {kernels_ms:.1f} ms "
          f"per step, {launches / n:.0f} launches per step")
    for name, r in labels.items():
        print(f"  {name:22s} host {r['cpu_total_ms']:7.2f} ms  device {r['device_total_ms']:7.2f}"
              f" ms")
    print("top host self time (ms per step):")
    for r in result["top_host_self"]:
        print(f"  {r['cpu_self_ms']:7.2f}  x{r['count']:<6.0f} {r['name'][:70]}")
    if cuda:
        print("top device self time (ms per step):")
        for r in result["top_device_self"]:
            print(f"  {r['device_self_ms']:7.2f}  x{r['count']:<6.0f} {r['name'][:70]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
