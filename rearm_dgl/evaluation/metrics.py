"""Top-K ranking metrics, per user, from a boolean hit matrix.

Every function here is pure and vectorised: it takes ``hits`` (B, Kmax), where ``hits[b, r]``
says whether the item ranked at position ``r`` (0-based) for user ``b`` is one of that user's
held-out items, and ``n_pos`` (B,), the number of held-out items of each user, and returns one
value per user. Averaging over users is the caller's job, so that per-user arrays stay
available for significance tests.

Definitions (binary relevance, MMRec conventions), with ``hits@K`` the hits among the top K:

- ``Recall@K = hits@K / |held-out|``
- ``Precision@K = hits@K / K``
- ``NDCG@K = DCG@K / IDCG@K`` with ``DCG@K = sum_{r<=K} rel_r / log2(r + 1)`` (ranks from 1)
  and ``IDCG@K`` the DCG of min(|held-out|, K) hits in the first positions.
- ``MAP@K = (sum_{r<=K} Precision@r * rel_r) / min(|held-out|, K)``
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

#: Metric families, in the order results list them.
METRICS: tuple[str, ...] = ("Recall", "NDCG", "Precision", "MAP")


def metric_names(ks: Sequence[int]) -> list[str]:
    """Names of every metric at every cut-off, e.g. ``["Recall@10", "Recall@20", ...]``."""
    return [f"{m}@{k}" for m in METRICS for k in ks]


def _prepare(hits, n_pos, ks: Sequence[int]) -> tuple[Tensor, Tensor, list[int]]:
    hits_t = torch.as_tensor(hits)
    if hits_t.dim() != 2:
        raise ValueError(f"hits must be a (B, Kmax) matrix, got shape {tuple(hits_t.shape)}")
    n_pos_t = torch.as_tensor(n_pos, device=hits_t.device)
    if n_pos_t.shape != hits_t.shape[:1]:
        raise ValueError(f"n_pos must have shape ({hits_t.shape[0]},), got {tuple(n_pos_t.shape)}")
    ks = [int(k) for k in ks]
    kmax = hits_t.shape[1]
    if not ks or min(ks) < 1 or max(ks) > kmax:
        raise ValueError(f"cut-offs {ks} must be between 1 and the hit matrix width {kmax}")
    if n_pos_t.numel() and int(n_pos_t.min()) < 1:
        raise ValueError("every user needs at least one held-out item (n_pos >= 1)")
    return hits_t.to(torch.float64), n_pos_t.to(torch.float64), ks


def _ranks(kmax: int, device) -> Tensor:
    return torch.arange(1, kmax + 1, dtype=torch.float64, device=device)  # (Kmax,) ranks 1..Kmax


def recall_at_k(hits, n_pos, ks: Sequence[int]) -> dict[str, Tensor]:
    """Recall@K = hits in the top K / number of held-out items.

    Args:
        hits: (B, Kmax) bool, ``hits[b, r]`` is True when the item at rank ``r`` is held out.
        n_pos: (B,) number of held-out items per user (each >= 1).
        ks: Cut-offs, each in 1..Kmax.

    Returns:
        ``{"Recall@K": (B,) float64 tensor}`` for every K.
    """
    h, n, ks = _prepare(hits, n_pos, ks)
    cum = h.cumsum(1)  # (B, Kmax) hits among the top r
    return {f"Recall@{k}": cum[:, k - 1] / n for k in ks}


def precision_at_k(hits, n_pos, ks: Sequence[int]) -> dict[str, Tensor]:
    """Precision@K = hits in the top K / K. Arguments as :func:`recall_at_k`."""
    h, _, ks = _prepare(hits, n_pos, ks)
    cum = h.cumsum(1)
    return {f"Precision@{k}": cum[:, k - 1] / k for k in ks}


def ndcg_at_k(hits, n_pos, ks: Sequence[int]) -> dict[str, Tensor]:
    """NDCG@K with binary gains and a log2 discount; the ideal DCG has min(n_pos, K) hits.

    Arguments as :func:`recall_at_k`.
    """
    h, n, ks = _prepare(hits, n_pos, ks)
    discount = 1.0 / torch.log2(_ranks(h.shape[1], h.device) + 1.0)  # (Kmax,) 1/log2(r+1)
    dcg = (h * discount).cumsum(1)  # (B, Kmax)
    ideal = discount.cumsum(0)  # (Kmax,) DCG of j hits in the first j places
    out = {}
    for k in ks:
        n_ideal = torch.clamp(n, max=k).long()  # (B,) in 1..K
        out[f"NDCG@{k}"] = dcg[:, k - 1] / ideal[n_ideal - 1]
    return out


def map_at_k(hits, n_pos, ks: Sequence[int]) -> dict[str, Tensor]:
    """MAP@K: the sum of Precision@r over the hit ranks r <= K, divided by min(n_pos, K).

    Arguments as :func:`recall_at_k`.
    """
    h, n, ks = _prepare(hits, n_pos, ks)
    prec = h.cumsum(1) / _ranks(h.shape[1], h.device)  # (B, Kmax) Precision@r
    ap = (prec * h).cumsum(1)  # (B, Kmax)
    return {f"MAP@{k}": ap[:, k - 1] / torch.clamp(n, max=k) for k in ks}


def topk_metrics(hits, n_pos, ks: Sequence[int]) -> dict[str, Tensor]:
    """Every metric at every cut-off, per user.

    Args:
        hits: (B, Kmax) bool hit matrix of the top-Kmax ranked items (tensor or array).
        n_pos: (B,) number of held-out items per user, each >= 1.
        ks: Cut-offs, each in 1..Kmax.

    Returns:
        ``{name: (B,) float64 tensor}`` keyed as :func:`metric_names` lists them, on the
        device of ``hits``.
    """
    parts = {
        **recall_at_k(hits, n_pos, ks), **ndcg_at_k(hits, n_pos, ks),
        **precision_at_k(hits, n_pos, ks), **map_at_k(hits, n_pos, ks),
    }
    return {name: parts[name] for name in metric_names(ks)}


def topk_metrics_numpy(hits: np.ndarray, n_pos: np.ndarray, ks: Sequence[int]
                       ) -> dict[str, np.ndarray]:
    """:func:`topk_metrics` for numpy inputs, returning float64 numpy arrays."""
    out = topk_metrics(torch.from_numpy(np.asarray(hits, dtype=bool)),
                       torch.from_numpy(np.asarray(n_pos, dtype=np.int64)), ks)
    return {k: v.numpy() for k, v in out.items()}
