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
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rearm_dgl.errors import DataError
from rearm_dgl.io_utils import atomic_path
from rearm_dgl.tracking import CHECKPOINT_BEST, CHECKPOINT_LAST, CONFIG_FILE

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


__all__ = ["BestWeights", "CHECKPOINT_FORMAT", "KEPT", "READABLE_FORMATS", "best_state",
           "load_checkpoint", "prune", "rng_state", "save_checkpoint", "set_rng_state"]
