"""Full-ranking evaluation: every item is ranked for every user of a split.

For each batch of users the scorer gives a (B, I) score matrix; the users' training items are
masked to ``-inf``, the top max(K) items are taken with ``torch.topk`` and looked up among the
users' held-out items of the split. Metrics are computed per user and averaged over the users
that have at least one held-out row in the split.

    result = evaluate(model_scorer(model), data, "valid", cfg.eval, device="cpu")
    result.metrics["Recall@20"], result.per_user["Recall@20"], result.users
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rearm_dgl.config import EvalConfig
from rearm_dgl.data.dataset import Interactions
from rearm_dgl.errors import DataError
from rearm_dgl.evaluation.metrics import metric_names, topk_metrics
from rearm_dgl.io_utils import atomic_path
from rearm_dgl.models.base import Recommender

#: ``scorer(user_ids (B,) long) -> (B, I) float scores``; higher ranks first.
Scorer = Callable[[Tensor], Tensor]


@dataclass
class EvalResult:
    """Metrics of one split.

    Attributes:
        metrics: ``{"Recall@10": mean over users, ...}``.
        per_user: ``{"Recall@10": (n,) float64, ...}``, aligned with ``users``.
        users: (n,) int64 ids of the evaluated users (those with held-out rows), ascending.
    """

    metrics: dict[str, float]
    per_user: dict[str, np.ndarray]
    users: np.ndarray


def evaluate(scorer: Scorer, data: Interactions, split: str, eval_cfg: EvalConfig,
             device: torch.device | str | None = "cpu") -> EvalResult:
    """Rank all items for every user of ``split`` with training items masked.

    Args:
        scorer: Callable mapping a (B,) long tensor of user ids (on ``device``) to (B, I)
            float scores. Its output may be modified in place, so it should be a fresh tensor
            (views are copied first).
        data: The dataset; ``data.train_csr`` gives the masked items.
        split: ``"valid"`` or ``"test"`` (``"train"`` works too, though everything is masked).
        eval_cfg: Cut-offs ``topk`` and the users per batch ``batch_size``.
        device: Where ranking and lookups run; ``None`` follows the scorer's output.

    Returns:
        An :class:`EvalResult` with one entry per metric and cut-off.

    Raises:
        DataError: The split has no rows.
    """
    ks = sorted({int(k) for k in eval_cfg.topk})
    kmax = ks[-1]
    n_items = data.n_items
    held = data.split_csr(split)
    n_held = np.diff(held.indptr).astype(np.int64)  # (U,)
    users = np.flatnonzero(n_held > 0).astype(np.int64)
    if users.size == 0:
        raise DataError(f"{data.source} ({split} split)", "no user has a held-out row",
                        "check the dataset's split files; evaluation needs at least one row")

    rows = np.repeat(np.arange(data.n_users, dtype=np.int64), n_held)
    keys_np = np.sort(rows * n_items + held.indices.astype(np.int64))  # sorted (user, item) keys
    train = data.train_csr
    train_indptr = train.indptr.astype(np.int64)
    train_indices = train.indices.astype(np.int64)

    per_user: dict[str, list[np.ndarray]] = {name: [] for name in metric_names(ks)}
    keys: Tensor | None = None
    with torch.no_grad():
        for start in range(0, users.size, eval_cfg.batch_size):
            batch = users[start:start + eval_cfg.batch_size]  # (B,)
            user_t = torch.from_numpy(batch)
            if device is not None:
                user_t = user_t.to(device)
            scores = scorer(user_t)
            if scores.shape != (batch.size, n_items):
                raise ValueError(f"scorer returned shape {tuple(scores.shape)}, "
                                 f"expected ({batch.size}, {n_items})")
            if device is not None:
                scores = scores.to(device)
            if scores._is_view() or not scores.is_contiguous():
                scores = scores.clone()  # masking below writes in place
            dev = scores.device
            if keys is None or keys.device != dev:
                keys = torch.from_numpy(keys_np).to(dev)

            # Mask every training item of the batch's users (one scatter, no per-user loop).
            mask_rows, mask_cols = _csr_rows(train_indptr, train_indices, batch)
            scores[torch.from_numpy(mask_rows).to(dev), torch.from_numpy(mask_cols).to(dev)] = (
                float("-inf"))

            top_scores, top_items = torch.topk(scores, min(kmax, n_items), dim=1)  # (B, k)
            query = torch.from_numpy(batch).to(dev)[:, None] * n_items + top_items  # (B, k)
            pos = torch.searchsorted(keys, query).clamp_(max=keys.numel() - 1)
            # A masked (-inf) item never counts, even if the splits overlap.
            hits = (keys[pos] == query) & (top_scores > float("-inf"))  # (B, k)
            if hits.shape[1] < kmax:  # fewer items than the largest cut-off
                hits = torch.nn.functional.pad(hits, (0, kmax - hits.shape[1]), value=False)
            n_pos = torch.from_numpy(n_held[batch]).to(dev)
            for name, values in topk_metrics(hits, n_pos, ks).items():
                per_user[name].append(values.cpu().numpy())

    arrays = {name: np.concatenate(parts) for name, parts in per_user.items()}
    return EvalResult(metrics={name: float(v.mean()) for name, v in arrays.items()},
                      per_user=arrays, users=users)


def _csr_rows(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """(batch row position, column) of every stored entry of the CSR rows ``rows``."""
    starts = indptr[rows]
    counts = indptr[rows + 1] - starts  # (B,)
    total = int(counts.sum())
    row_pos = np.repeat(np.arange(rows.size, dtype=np.int64), counts)
    # Offset of each entry inside its row, then shifted to the row's start in ``indices``.
    within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return row_pos, indices[np.repeat(starts, counts) + within]


def model_scorer(model: Recommender) -> Scorer:
    """A scorer from a model's final representations.

    ``model.embeddings()`` is computed once, in eval mode and without gradients; the model's
    previous training mode is restored afterwards (and around every scoring call).

    Args:
        model: Any :class:`~rearm_dgl.models.base.Recommender`.

    Returns:
        ``scorer(users) -> model.score(users, user_emb, item_emb)`` on the model's device.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            user_emb, item_emb = model.embeddings()
    finally:
        model.train(was_training)

    def scorer(users: Tensor) -> Tensor:
        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return model.score(users.to(user_emb.device), user_emb, item_emb)
        finally:
            model.train(training)

    return scorer


def popularity_scorer(data: Interactions) -> Scorer:
    """A scorer that ranks items by their number of training users (the same for everyone)."""
    popularity = torch.from_numpy(data.item_degree.astype(np.float32))  # (I,)

    def scorer(users: Tensor) -> Tensor:
        return popularity.to(users.device).expand(users.numel(), -1).clone()  # (B, I)

    return scorer


def save_per_user(path: str | Path, result: EvalResult) -> None:
    """Write ``users`` and one array per metric to ``path`` (.npz), atomically."""
    arrays = {"users": np.asarray(result.users, dtype=np.int64),
              **{name: np.asarray(v, dtype=np.float64) for name, v in result.per_user.items()}}
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def load_per_user(path: str | Path) -> EvalResult:
    """Read a file written by :func:`save_per_user`; ``metrics`` are the per-user means.

    Raises:
        DataError: The file is missing, unreadable or has no ``users`` array.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot read per-user metrics ({exc})",
                        "point to a per_user_*.npz file written by rearm-dgl") from exc
    if "users" not in arrays:
        raise DataError(path, "no 'users' array", "point to a file written by save_per_user")
    users = arrays.pop("users")
    bad = [n for n, v in arrays.items() if v.shape != users.shape]
    if bad:
        raise DataError(path, f"arrays {bad} do not line up with 'users'",
                        "rewrite the file with save_per_user")
    return EvalResult(metrics={n: float(v.mean()) for n, v in arrays.items()},
                      per_user=arrays, users=users)
