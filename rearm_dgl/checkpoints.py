"""A run's checkpoints: what resuming needs while it runs, what the policy keeps after.

Two files, both in the run folder:

| file | content |
|---|---|
| ``checkpoint_last.pt`` | the resumable state: model, optimiser, early stopping, RNG, epoch, wall time, and the best weights so far (``None`` when they are the model's own) |
| ``checkpoint_best.pt`` | the best validation weights: what test and ``rearm-dgl evaluate`` score |

While a run goes, :func:`rearm_dgl.train.fit` keeps the best weights in CPU memory
(:class:`BestWeights`) and writes only ``checkpoint_last.pt``, every
``train.checkpoint_minutes`` of wall time: a killed run resumes from there and, since every
epoch's randomness depends on ``(seed, epoch)`` only, replays the lost epochs exactly. When
the run completes, ``train.keep_checkpoints`` decides what remains (:data:`KEPT`):

- ``best`` (default): ``checkpoint_best.pt`` only;
- ``last``: ``checkpoint_last.pt`` of the final epoch (it holds the best weights too);
- ``all``: both;
- ``none``: neither (the metrics, per-user results and logs stay).

Resuming (:func:`load_resume`, :func:`restore`) checks the config against the saved one and
reads the data from the absolute folders recorded when the run started
(:func:`recorded_data_config`), so it works from any working directory.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rearm_dgl.config import DataConfig, RunConfig, config_from_dict, load_config
from rearm_dgl.errors import ConfigError, DataError
from rearm_dgl.io_utils import atomic_path
from rearm_dgl.tracking import CHECKPOINT_BEST, CHECKPOINT_LAST, CONFIG_FILE, RESULTS_FILE

#: Written by this version. Format 2 (best weights only in ``checkpoint_best.pt``, written on
#: every improvement) is still read.
CHECKPOINT_FORMAT = 3
READABLE_FORMATS = (2, 3)

#: The files a completed run keeps under each ``train.keep_checkpoints`` policy.
KEPT: dict[str, tuple[str, ...]] = {
    "best": (CHECKPOINT_BEST,),
    "last": (CHECKPOINT_LAST,),
    "all": (CHECKPOINT_BEST, CHECKPOINT_LAST),
    "none": (),
}


class BestWeights:
    """The best validation weights so far, held on the CPU.

    The buffers are allocated once, from the model's initial weights (epoch 0), and each
    improvement copies into them, so a long run allocates nothing more.

    Args:
        model: The model being trained; its ``state_dict()`` is copied.
    """

    def __init__(self, model: torch.nn.Module):
        self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.epoch = 0

    def update(self, model: torch.nn.Module, epoch: int) -> None:
        """Copy the model's current weights in, as those of ``epoch``."""
        for key, value in model.state_dict().items():
            self.state[key].copy_(value.detach())
        self.epoch = epoch

    def load(self, state: Mapping[str, torch.Tensor], epoch: int) -> None:
        """Take saved weights (e.g. from a checkpoint) as those of ``epoch``."""
        for key, value in state.items():
            self.state[key].copy_(value)
        self.epoch = epoch


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` (with this version's format number) atomically to ``path``."""
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`rearm_dgl.train.fit` (tensors mapped to CPU).

    Raises:
        DataError: The file is missing, unreadable, or not a rearm-dgl checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found",
                        "point to a run folder written by `rearm-dgl train`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every unpickling failure means the same here
        # torch's own text suggests weights_only=False, which would run arbitrary code from
        # the file; name the failure only.
        raise DataError(path, f"cannot read the checkpoint: the file is truncated or damaged "
                        f"({type(exc).__name__})",
                        "resume from another copy, or start the run again") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") not in READABLE_FORMATS:
        raise DataError(path, "not a rearm-dgl checkpoint (unknown format)",
                        "point to a checkpoint written by this version of rearm-dgl")
    return ckpt


def best_state(run_dir: str | Path) -> dict[str, Any]:
    """The best validation weights of a run, with its config and data provenance.

    Read from ``checkpoint_best.pt``, or else from the best weights inside
    ``checkpoint_last.pt`` (a run in progress, or one that kept ``last``).

    Returns:
        ``{"config", "epoch", "model", "data_fingerprint", "data_paths"}``.

    Raises:
        DataError: Neither file holds the best weights; the message says when the run's
            ``train.keep_checkpoints`` policy removed them.
    """
    run_dir = Path(run_dir)
    if (run_dir / CHECKPOINT_BEST).is_file():
        ckpt = load_checkpoint(run_dir / CHECKPOINT_BEST)
        return {"config": ckpt["config"], "epoch": ckpt["epoch"], "model": ckpt["model"],
                "data_fingerprint": ckpt.get("data_fingerprint"),
                "data_paths": ckpt.get("data_paths")}
    if (run_dir / CHECKPOINT_LAST).is_file():
        ckpt = load_checkpoint(run_dir / CHECKPOINT_LAST)
        best = ckpt.get("best_model") or (ckpt["model"] if ckpt.get("format", 2) >= 3 else None)
        if best is not None:
            return {"config": ckpt["config"], "epoch": ckpt["early_stopping"]["best_epoch"],
                    "model": best, "data_fingerprint": ckpt.get("data_fingerprint"),
                    "data_paths": ckpt.get("data_paths")}
    policy = _saved_policy(run_dir)
    if policy is not None and CHECKPOINT_BEST not in KEPT.get(policy, (CHECKPOINT_BEST,)):
        raise DataError(run_dir, f"the best weights were not kept: the run's "
                        f"train.keep_checkpoints is {policy!r}",
                        "its test metrics are in results.json; to re-score, train again with "
                        "--set train.keep_checkpoints=best")
    raise DataError(run_dir, f"no {CHECKPOINT_BEST} in this folder",
                    "point to a run folder written by `rearm-dgl train` (a run in progress "
                    f"has one once it has written its first {CHECKPOINT_LAST})")


def _saved_policy(run_dir: Path) -> str | None:
    """``train.keep_checkpoints`` from the run's ``config.yaml``, if readable."""
    import yaml

    try:
        saved = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
        return str(saved["train"]["keep_checkpoints"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def prune(run_dir: str | Path, policy: str) -> None:
    """Remove the checkpoints that ``policy`` does not keep."""
    for name in (CHECKPOINT_BEST, CHECKPOINT_LAST):
        if name not in KEPT[policy]:
            (Path(run_dir) / name).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------
# Resume and data paths

#: Config keys that may differ between a run's saved config and the one it is resumed with:
#: where it runs and how it keeps checkpoints, not what it computes.
RESUME_MAY_CHANGE = ("train.device", "train.keep_checkpoints", "train.checkpoint_minutes")


def load_resume(run_dir: Path,
                cfg: RunConfig | None) -> tuple[RunConfig, dict[str, Any] | None]:
    """The config and checkpoint to resume ``run_dir`` with.

    A run stopped before its first checkpoint resumes from epoch 0: its ``config.yaml`` is
    all that needs, as every epoch is seeded by ``(seed, epoch)``. The checkpoint is then None.

    Args:
        run_dir: The run folder.
        cfg: The config to resume with, or None for the saved one. It must equal the saved
            one except for the keys of :data:`RESUME_MAY_CHANGE`.

    Raises:
        ConfigError: The run completed, is no run folder, or ``cfg`` differs (each key named).
        DataError: The checkpoint cannot be read.
    """
    results_path = run_dir / RESULTS_FILE
    if results_path.exists():
        raise ConfigError(f"--resume {run_dir}: this run already completed "
                          f"({RESULTS_FILE} exists); start a new run instead")
    last = run_dir / CHECKPOINT_LAST
    if last.exists():
        ckpt = load_checkpoint(last)
        saved, where = config_from_dict(ckpt["config"]), CHECKPOINT_LAST
    elif (run_dir / CONFIG_FILE).is_file():
        ckpt, where = None, CONFIG_FILE
        saved = load_config(run_dir / CONFIG_FILE)
    else:
        raise ConfigError(f"--resume {run_dir}: no {CHECKPOINT_LAST} and no "
                          f"{CONFIG_FILE}: not a run folder written by rearm-dgl")
    if cfg is None:
        return saved, ckpt
    given, before = cfg.flat(), saved.flat()
    differ = [k for k in sorted(set(given) | set(before))
              if k not in RESUME_MAY_CHANGE and given.get(k) != before.get(k)]
    if differ:
        shown = "; ".join(f"{k} is {given.get(k)!r}, the run started with {before.get(k)!r}"
                          for k in differ[:5]) + ("; ..." if len(differ) > 5 else "")
        raise ConfigError(
            f"--resume {run_dir}: the config differs from the one the run started with (kept "
            f"in {where}): {shown}. Only {', '.join(RESUME_MAY_CHANGE)} may change on "
            f"resume; undo the edit (e.g. in {run_dir / CONFIG_FILE}) or start a new "
            f"run")
    return cfg, ckpt


def restore(ckpt: dict[str, Any], run_dir: Path, model, optimizer, stopper,
            best: BestWeights) -> tuple[int, float, str | None, dict[str, float],
                                        tuple[int, int | None]]:
    """Load a resumed state into the model, optimiser, early stopping (``stopper``), best
    weights and the global RNGs.

    Returns:
        ``(start_epoch, wall seconds before, stop reason, best valid metrics,
        (peak RSS, peak GPU bytes) before)``.
    """
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    stopper.load_state_dict(ckpt["early_stopping"])
    if ckpt.get("best_model") is not None:
        best.load(ckpt["best_model"], stopper.best_epoch)
    elif ckpt["format"] >= 3 or stopper.best_epoch == int(ckpt["epoch"]):
        best.update(model, stopper.best_epoch)  # the best weights are the model's own
    else:  # format 2 kept them in checkpoint_best.pt, written on every improvement
        best.load(load_checkpoint(run_dir / CHECKPOINT_BEST)["model"],
                  stopper.best_epoch)
    set_rng_state(ckpt["rng"])
    return (int(ckpt["epoch"]) + 1, float(ckpt.get("wall_seconds", 0.0)),
            ckpt.get("stop_reason"), dict(ckpt["best_valid"]),
            (int(ckpt.get("peak_rss_bytes") or 0), ckpt.get("peak_gpu_bytes")))


def recorded_data_config(cfg: RunConfig, data_paths: dict[str, str] | None) -> DataConfig:
    """The run's data settings, with the absolute paths recorded when it started.

    A dataset folder or cache folder given as a relative path is only valid from the folder
    the run started in; ``env.json`` and the checkpoints record both as absolute paths, so
    ``--resume`` and ``evaluate`` work from anywhere. A recorded dataset folder that no longer exists falls
    back to the config as written (the content fingerprint still guards the data).
    """
    if not data_paths:
        return cfg.data
    changes = {}
    if data_paths.get("dataset") and Path(data_paths["dataset"]).is_dir():
        changes["dataset"] = data_paths["dataset"]
    if data_paths.get("cache_dir"):
        changes["cache_dir"] = data_paths["cache_dir"]
    return replace(cfg.data, **changes)


def data_paths_of(data, data_cfg: DataConfig) -> dict[str, str]:
    """Absolute dataset and cache folders, as :func:`recorded_data_config` reads them."""
    source = Path(data.source)
    return {"dataset": str(source) if source.is_absolute() and source.is_dir() else "",
            "cache_dir": str(Path(data_cfg.cache_dir).resolve()) if data_cfg.cache_dir else ""}


# ---------------------------------------------------------------------------------------
# RNG state


def rng_state() -> dict[str, Any]:
    """Python's, NumPy's and torch's (CPU and CUDA) generator states, as tensors and lists."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": _to_lists(random.getstate()),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):  # a different GPU count: epochs reseed anyway
            pass


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


__all__ = ["BestWeights", "CHECKPOINT_FORMAT", "KEPT", "READABLE_FORMATS", "RESUME_MAY_CHANGE",
           "best_state", "data_paths_of", "load_checkpoint", "load_resume", "prune",
           "recorded_data_config", "restore", "rng_state", "save_checkpoint", "set_rng_state"]
