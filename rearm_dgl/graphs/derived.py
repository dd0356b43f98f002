"""Operators that baselines derive from the cached heterograph with their own weights.

The heterograph (:mod:`rearm_dgl.graphs.build`) stores each relation once, with REARM's
weights. Baselines keep its neighbour sets and re-weight them (baselines spec B1, B3):

- **Row-sum symmetric normalisation** of a kNN graph, ``S_ij = v_ij / sqrt(r_i r_j)`` with
  ``r`` the row sums of the kept values ``v`` (the same vector on both sides, although the
  kNN graph is directed). Values are the cosines (LATTICE, MGCN) or ones (FREEDOM, DRAGON,
  where every entry becomes ``1/k``).
- **Random walk with self-loops** on the interaction graph, ``(D + I)^-1 (A + I)`` (LATTICE):
  every node averages itself and its neighbours.

A row whose sum is not positive (a zero feature row, or negative cosines) gets zero weights:
the reference code divides by zero there and yields NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from rearm_dgl._dgl import dgl
from rearm_dgl.graphs.schema import (
    INTERACTED_BY,
    INTERACTS,
    ITEM,
    ITEM_SELF,
    USER,
    USER_SELF,
    WEIGHT,
)

__all__ = ["interaction_graph", "item_knn_graph", "knn_values", "rowsum_sym_norm",
           "rw_self_loop_graph"]

KnnValues = Literal["cosine", "binary"]


def rowsum_sym_norm(rows: Tensor, cols: Tensor, values: Tensor, n: int) -> Tensor:
    """``values / sqrt(r[rows] r[cols])`` with ``r`` the row sums of the (n, n) matrix.

    Differentiable in ``values``. Duplicate (row, col) entries count once each in ``r`` and
    keep their own normalised value (summing them later gives the normalised matrix).

    Args:
        rows: (nnz,) long row of each entry (row i keeps column j).
        cols: (nnz,) long column of each entry.
        values: (nnz,) float values.
        n: Number of rows and columns.

    Returns:
        (nnz,) normalised values; 0 in rows or columns whose sum is not positive.
    """
    r = values.new_zeros(n).index_add(0, rows, values)  # (n,) row sums
    inv = torch.where(r > 0, r.clamp_min(1e-30).rsqrt(), torch.zeros_like(r))
    return values * inv[rows] * inv[cols]


def knn_values(graph, etype, values: KnnValues) -> tuple[Tensor, Tensor, Tensor]:
    """A kNN relation of the heterograph as ``(rows, cols, normalised values)``.

    The heterograph stores ``cos(i, j) / k`` on the edge ``j -> i`` with ``k`` edges into every
    row, so the cosine is the stored weight times the row's in-degree.

    Args:
        graph: The relation heterograph.
        etype: A homogeneous kNN relation (e.g. ``ITEM_SEMANTIC_IMAGE``).
        values: ``"cosine"`` keeps the cosines, ``"binary"`` puts ones; both are then
            row-sum symmetric normalised (:func:`rowsum_sym_norm`).

    Returns:
        Long (nnz,) rows and columns, float32 (nnz,) values (CPU tensors).
    """
    if values not in ("cosine", "binary"):
        raise ValueError(f"kNN values must be 'cosine' or 'binary', got {values!r}")
    src, dst = (t.cpu().long() for t in graph.edges(etype=etype))
    n = graph.num_nodes(etype[2])
    if values == "binary":
        v = torch.ones(dst.shape[0])
    else:
        k = torch.zeros(n).index_add_(0, dst, torch.ones(dst.shape[0]))
        v = graph.edges[etype].data[WEIGHT].detach().cpu().float() * k[dst]
    return dst, src, rowsum_sym_norm(dst, src, v, n)


def item_knn_graph(graph, etypes: Sequence[tuple], values: KnnValues):
    """A heterograph over items holding ``etypes`` re-weighted by :func:`knn_values`.

    Feed it to :class:`~rearm_dgl.graphs.propagate.Propagation` with per-relation scales to
    mix the modalities.
    """
    n_items = graph.num_nodes(ITEM)
    parts = {et: knn_values(graph, et, values) for et in etypes}
    g = dgl.heterograph({et: (src, dst) for et, (dst, src, _) in parts.items()},
                        num_nodes_dict={ITEM: n_items})
    for et, (_, _, w) in parts.items():
        g.edges[et].data[WEIGHT] = w
    return g


def interaction_graph(users: Tensor, items: Tensor, weights: Tensor, n_users: int,
                      n_items: int):
    """Both interaction relations over the edges (users[k], items[k]) with ``weights``."""
    g = dgl.heterograph({INTERACTS: (users, items), INTERACTED_BY: (items, users)},
                        num_nodes_dict={USER: n_users, ITEM: n_items})
    g.edges[INTERACTS].data[WEIGHT] = weights
    g.edges[INTERACTED_BY].data[WEIGHT] = weights
    return g


def rw_self_loop_graph(users: Tensor, items: Tensor, n_users: int, n_items: int):
    """The interaction graph normalised as ``(D + I)^-1 (A + I)`` (baselines spec B1).

    Node v receives ``1 / (deg(v) + 1)`` from itself and from each neighbour, so every row
    sums to 1 and a node without interactions keeps its own vector.

    Args:
        users: (N,) long users of the training pairs.
        items: (N,) long items of the training pairs.
        n_users: U.
        n_items: I.

    Returns:
        A heterograph with ``INTERACTS``, ``INTERACTED_BY``, ``USER_SELF`` and ``ITEM_SELF``.
    """
    users, items = users.cpu().long(), items.cpu().long()
    ones = torch.ones(users.shape[0])
    inv_u = 1.0 / (torch.zeros(n_users).index_add_(0, users, ones) + 1.0)  # (U,)
    inv_i = 1.0 / (torch.zeros(n_items).index_add_(0, items, ones) + 1.0)  # (I,)
    all_u, all_i = torch.arange(n_users), torch.arange(n_items)
    g = dgl.heterograph({INTERACTS: (users, items), INTERACTED_BY: (items, users),
                         USER_SELF: (all_u, all_u), ITEM_SELF: (all_i, all_i)},
                        num_nodes_dict={USER: n_users, ITEM: n_items})
    g.edges[INTERACTS].data[WEIGHT] = inv_i[items]
    g.edges[INTERACTED_BY].data[WEIGHT] = inv_u[users]
    g.edges[USER_SELF].data[WEIGHT] = inv_u
    g.edges[ITEM_SELF].data[WEIGHT] = inv_i
    return g
