"""TensorBoard hparams sessions that compare runs of different models in one logdir.

Each run (a training run, or a trial of a study view) gets one *session*: a
``session_start_info`` summary written with ``tensorboard.plugins.hparams.summary_v2.hparams_pb``
(no TensorFlow needed) and its metrics as scalars, in the folder ``<run>/hparams``. No
experiment summary is written, so TensorBoard builds the table from every session it finds:
the columns are the union over runs (the ``rearm.*`` columns stay next to a LightGCN run),
booleans stay booleans, and the metric columns are the session's metrics only.

One metric naming scheme serves train runs and study views: ``hparam/valid.<metric>`` is the
validation metric at the best epoch, ``hparam/test.<metric>`` the test metric there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Sub-folder of a run that holds its hparams session.
SESSION_DIR = "hparams"

#: Config keys that say where or how a run was computed, not what: left out of the hparams.
BOOKKEEPING = frozenset({
    "data.data_root", "data.cache_dir", "train.device",
    "train.keep_checkpoints", "train.checkpoint_minutes", "eval.batch_size",
})


def metric_tag(split: str, metric: str) -> str:
    """``("valid", "Recall@20")`` -> ``hparam/valid.Recall@20``."""
    return f"hparam/{split}.{metric}"


def hparam_value(value: Any) -> bool | int | float | str | None:
    """A value TensorBoard's hparams accept: bool/int/float/str kept, lists joined, None kept
    (and then left out of the session)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def config_hparams(flat: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The hparams of a run: its flat config without :data:`BOOKKEEPING` keys, plus model."""
    out = {k: hparam_value(v) for k, v in flat.items() if k not in BOOKKEEPING}
    out["model"] = model
    return out


def write_session(run_dir: str | Path, hparams: Mapping[str, Any],
                  metrics: Mapping[str, float], start_time: float | None = None) -> Path:
    """Write one hparams session into ``<run_dir>/hparams``.

    Args:
        run_dir: The run (or trial) folder inside the TensorBoard logdir.
        hparams: Name -> value; values of None (and non-finite floats) are left out, so
            the column stays empty for this run.
        metrics: Tag -> value, usually from :func:`metric_tag`; written as scalars at
            step 0.
        start_time: Session start in seconds since the epoch (default: now).

    Returns:
        The session folder.
    """
    from tensorboard.plugins.hparams import summary_v2
    from torch.utils.tensorboard import SummaryWriter

    kept = {}
    for k, v in hparams.items():
        v = hparam_value(v)
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            continue
        kept[k] = v
    session = Path(run_dir) / SESSION_DIR
    with SummaryWriter(log_dir=str(session)) as writer:
        writer.file_writer.add_summary(summary_v2.hparams_pb(kept, start_time_secs=start_time))
        for tag, value in metrics.items():
            writer.add_scalar(tag, float(value), 0)
    return session


__all__ = ["BOOKKEEPING", "SESSION_DIR", "config_hparams", "hparam_value", "metric_tag",
           "write_session"]
