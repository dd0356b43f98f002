"""The run directory and what is written into it.

Every training run owns one folder, ``<runs_dir>/<dataset>/<model>/<YYYYmmdd-HHMMSS>-s<seed>/``:

| file | content |
|---|---|
| ``config.yaml`` | the resolved :class:`~rearm_dgl.config.RunConfig` |
| ``env.json`` | versions, device, git commit, host, CPU count, features note, data paths |
| ``metrics.jsonl`` | one JSON line per epoch: loss parts, valid metrics, seconds (all, training, validation), lr |
| ``results.json`` | best epoch, valid and test metrics, stop reason, wall time, fingerprints, efficiency |
| ``per_user_test.npz`` | per-user test metrics, aligned with ``users`` |
| ``checkpoint_best.pt`` / ``checkpoint_last.pt`` | see :mod:`rearm_dgl.checkpoints` |
| ``events.out.tfevents.*`` | TensorBoard scalars; ``hparams/`` holds the hparams session |
| ``run.lock`` | held (an OS file lock) by the one process that trains the run |

Everything a later run reads is written atomically; ``metrics.jsonl`` is appended one line
per epoch and rewritten (atomically) when a run resumes from an earlier epoch.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rearm_dgl.config import RunConfig
from rearm_dgl.errors import ConfigError
from rearm_dgl.io_utils import atomic_write_json, atomic_write_text, hash_parts, json_default

CONFIG_FILE = "config.yaml"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
PER_USER_TEST_FILE = "per_user_test.npz"
CHECKPOINT_BEST = "checkpoint_best.pt"
CHECKPOINT_LAST = "checkpoint_last.pt"
RUN_LOCK_FILE = "run.lock"

#: Config keys that do not change what a run computes, so runs differing only there share
#: a fingerprint (seeds of one setting are grouped by it).
FINGERPRINT_EXCLUDED = ("train.seed", "train.device", "data.cache_dir", "data.data_root",
                        "train.keep_checkpoints", "train.checkpoint_minutes")


def config_fingerprint(cfg: RunConfig | Mapping[str, Any]) -> str:
    """Hash of a config without the keys of :data:`FINGERPRINT_EXCLUDED` (seed, device,
    data and cache folders, checkpoint bookkeeping).

    Args:
        cfg: A :class:`RunConfig` or its ``to_dict()`` form.

    Returns:
        A 32-character hex digest; equal for runs that differ only by the excluded keys.
    """
    d = cfg.to_dict() if isinstance(cfg, RunConfig) else cfg
    kept = {}
    for section, body in d.items():
        if isinstance(body, Mapping):
            body = {k: v for k, v in body.items() if f"{section}.{k}" not in FINGERPRINT_EXCLUDED}
        kept[section] = body
    return hash_parts([kept])


def dataset_label(dataset: str) -> str:
    """The folder name a dataset gets under the runs directory (``demo``, ``baby``, ...)."""
    name = Path(dataset.rstrip("/\\")).name or "dataset"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def new_run_dir(runs_dir: str | Path, dataset: str, model: str, seed: int) -> Path:
    """Create and return a fresh ``<runs_dir>/<dataset>/<model>/<timestamp>-s<seed>/``.

    Two runs started in the same second (or in parallel processes) get distinct folders: the
    folder is claimed with an exclusive ``mkdir`` and a ``-2``, ``-3``, ... suffix is added
    when the name is taken.
    """
    parent = Path(runs_dir) / dataset_label(dataset) / model
    parent.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-s{seed}"
    for n in range(1, 10_000):
        path = parent / (stem if n == 1 else f"{stem}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run folder under {parent}")


@contextmanager
def hold_run_dir(run_dir: str | Path) -> Iterator[None]:
    """Hold ``run_dir`` for this process while the block runs.

    The lock is an OS file lock on ``run.lock`` (:mod:`filelock`), so the operating system
    frees it when the process dies, even by SIGKILL: a crashed run never blocks its resume.

    Raises:
        ConfigError: Another process holds the run.
    """
    from filelock import FileLock, Timeout

    path = Path(run_dir) / RUN_LOCK_FILE
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(f"{run_dir}: another process is training this run (it holds "
                          f"{path}); wait for it to end, or stop it, then resume") from None
    try:
        yield
    finally:
        lock.release()


def write_config(run_dir: str | Path, cfg: RunConfig) -> None:
    cfg.save(Path(run_dir) / CONFIG_FILE)


def environment(device: torch.device | str, features_note: str = "") -> dict[str, Any]:
    """Versions, device, git commit, host and CPU count of this process."""
    device = torch.device(device)
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "dgl": _version("dgl"),
        "numpy": np.__version__,
        "rearm_dgl": _version("rearm-dgl"),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "host": socket.gethostname(),
        "git_commit": None,
        "git_dirty": None,
        "cwd": str(Path.cwd()),
        "argv": list(sys.argv),
        "features_note": features_note,
    }
    env.update(_git_state(Path.cwd()))
    return env


def write_env(run_dir: str | Path, device: torch.device | str, features_note: str = "",
              resumed_at_epoch: int | None = None,
              data_paths: Mapping[str, str] | None = None) -> None:
    """Write ``env.json``; a resumed run rewrites it with the epoch it resumed from.

    ``data_paths`` (the absolute dataset and cache folders the run reads) lets a run that
    stopped before its first checkpoint resume from another working directory.
    """
    env = environment(device, features_note)
    if resumed_at_epoch is not None:
        env["resumed_at_epoch"] = resumed_at_epoch
    if data_paths is not None:
        env["data_paths"] = dict(data_paths)
    atomic_write_json(Path(run_dir) / ENV_FILE, env)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_state(cwd: Path) -> dict[str, Any]:
    """``git_commit`` and ``git_dirty`` if ``cwd`` is inside a git checkout, else {}."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                                 timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def write_results(run_dir: str | Path, results: Mapping[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / RESULTS_FILE, dict(results))


def write_per_user_test(run_dir: str | Path, result) -> None:
    """Save an :class:`~rearm_dgl.evaluation.EvalResult`'s per-user test metrics."""
    from rearm_dgl.evaluation import save_per_user

    save_per_user(Path(run_dir) / PER_USER_TEST_FILE, result)


# ---------------------------------------------------------------------------------------
# Efficiency: time per epoch and evaluation, peak memory, parameters


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window for :func:`peak_memory`.

    On Linux the process's RSS high-water mark is reset (``/proc/self/clear_refs``), so a
    worker that trains several runs reports each run's own peak; CUDA's allocator peak is
    reset on a CUDA device.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass  # elsewhere the peak is the process's since it started
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def rss_bytes() -> int:
    """This process's resident memory now, in bytes (its peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """This process's peak resident memory in bytes, since :func:`reset_peak_memory`."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, else KiB
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def peak_memory(device: torch.device) -> tuple[int, int | None]:
    """``(peak RSS bytes, peak CUDA bytes allocated or None on CPU)`` since the last reset."""
    gpu = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    return peak_rss_bytes(), gpu


def efficiency(run_dir: str | Path, peak_rss_bytes: int, peak_gpu_bytes: int | None,
               n_parameters: int) -> dict[str, Any]:
    """The ``efficiency`` object of ``results.json``.

    Medians run over every epoch in ``metrics.jsonl``, so a resumed run counts the epochs of
    all its sessions; records written before these fields existed are skipped.

    Returns:
        ``{"epoch_seconds": median training seconds per epoch, "eval_seconds": median
        validation seconds, "peak_rss_bytes": int, "peak_gpu_bytes": int or None,
        "n_parameters": int}`` (a median is None when no epoch recorded it).
    """
    records = read_metrics(run_dir)

    def median(key: str) -> float | None:
        values = [float(r[key]) for r in records if isinstance(r.get(key), (int, float))]
        return statistics.median(values) if values else None

    return {"epoch_seconds": median("train_seconds"), "eval_seconds": median("eval_seconds"),
            "peak_rss_bytes": int(peak_rss_bytes),
            "peak_gpu_bytes": None if peak_gpu_bytes is None else int(peak_gpu_bytes),
            "n_parameters": int(n_parameters)}


# ---------------------------------------------------------------------------------------
# metrics.jsonl


def append_metrics(run_dir: str | Path, record: Mapping[str, Any]) -> None:
    """Append one epoch's record as a JSON line (flushed and synced)."""
    with open(Path(run_dir) / METRICS_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(dict(record), default=json_default) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every complete record of ``metrics.jsonl`` (a torn last line is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_metrics(run_dir: str | Path, last_epoch: int) -> None:
    """Keep the records of epochs ``<= last_epoch`` only (used when a run resumes)."""
    kept = [r for r in read_metrics(run_dir) if int(r.get("epoch", 0)) <= last_epoch]
    atomic_write_text(Path(run_dir) / METRICS_FILE,
                      "".join(json.dumps(r, default=json_default) + "\n" for r in kept))


# ---------------------------------------------------------------------------------------
# TensorBoard


class TensorBoardTracker:
    """Scalars and hparams for one run, written into the run directory itself.

    Args:
        run_dir: The run folder; event files go straight into it.
        purge_step: On resume, the first epoch that will be re-run: TensorBoard then discards
            the earlier file's events from that step on, so curves have no duplicates.
    """

    def __init__(self, run_dir: str | Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge_step)

    def log_epoch(self, epoch: int, loss: Mapping[str, float], valid: Mapping[str, float],
                  seconds: float, lr: float) -> None:
        """``loss/<part>``, ``valid/<metric>``, ``time/epoch_s`` and ``lr`` at step ``epoch``."""
        for part, value in loss.items():
            self.writer.add_scalar(f"loss/{part}", value, epoch)
        for name, value in valid.items():
            self.writer.add_scalar(f"valid/{name}", value, epoch)
        self.writer.add_scalar("time/epoch_s", seconds, epoch)
        self.writer.add_scalar("lr", lr, epoch)
        self.writer.flush()

    def log_hparams(self, cfg: RunConfig, best_valid: Mapping[str, float],
                    test: Mapping[str, float], metric: str) -> None:
        """The run's hparams session (:func:`rearm_dgl.hparams.write_session`).

        Metrics are ``hparam/valid.<metric>`` (best epoch) and ``hparam/test.<metric>``;
        ``hparam/valid.<eval.metric>`` (Recall@20 by default) is always present.
        """
        from rearm_dgl.hparams import config_hparams, metric_tag, write_session

        values = {metric_tag("valid", metric): float(best_valid.get(metric, float("nan")))}
        values.update({metric_tag("valid", k): float(v) for k, v in best_valid.items()})
        values.update({metric_tag("test", k): float(v) for k, v in test.items()})
        write_session(self.run_dir, config_hparams(cfg.flat(), cfg.model), values)

    def close(self) -> None:
        self.writer.close()


__all__ = [
    "CHECKPOINT_BEST", "CHECKPOINT_LAST", "CONFIG_FILE", "ENV_FILE", "METRICS_FILE",
    "PER_USER_TEST_FILE", "RESULTS_FILE", "RUN_LOCK_FILE", "FINGERPRINT_EXCLUDED",
    "TensorBoardTracker", "append_metrics", "config_fingerprint", "dataset_label", "efficiency",
    "environment", "hold_run_dir", "new_run_dir", "peak_memory", "peak_rss_bytes", "read_metrics",
    "reset_peak_memory", "rss_bytes", "truncate_metrics", "write_config", "write_env",
    "write_per_user_test", "write_results",
]
