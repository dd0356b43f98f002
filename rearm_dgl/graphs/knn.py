"""Cosine top-k kNN graphs (spec 1.2-1.5), computed in row blocks.

Row ``i`` of a kNN graph keeps its ``k`` most similar rows ``j`` (itself included, since
self-similarity is the maximum) with weight ``cos(i, j) / k``: the spec's ``D^-1/2 S D^-1/2``
where every row has exactly ``k`` entries. Row ``i`` keeping column ``j`` is the edge
``j -> i``. The full n x n similarity matrix is never built; a zero feature row has
similarity 0 to everything (never NaN).

User interest kNN compares ``P = R X / deg(u)``. Cosine ignores the ``1/deg`` scale, so
``cos(P_u, P_v)`` is computed from ``R G R^T`` with the item Gram matrix ``G = X X^T``, which
the item kNN of the same modality needs anyway. That replaces ``2 U^2 d`` dense flops by
``I^2 d`` plus sparse products (at Clothing scale 12.7 TFLOP become 2.2). Only the upper
block triangle of ``G`` is computed and held, so its memory is about ``2 I^2`` bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

__all__ = ["knn_graph", "knn_graph_differentiable", "modality_knn", "user_interest_features"]

# Rows per block are chosen so that one (rows x n) float32 block stays near this size; small
# enough that a few such temporaries next to the Gram matrix keep the peak memory low.
_BLOCK_BYTES = 1 << 25
# But never fewer rows than this: thinner blocks make the similarity products
# memory-bound (each block streams all n rows) and cost more in per-block overhead.
_MIN_BLOCK_ROWS = 256
# Largest full I x I float32 Gram size (4 I^2 bytes; half of it, 8 GiB, is held) for the
# Gram route; larger item sets compare the (U, F) interest features directly. At Elec's
# size (63k items, 192k users, 4096-d) the Gram route is about 8 TFLOP and 7.4 GiB where
# the direct one would be about 300 TFLOP.
_GRAM_MAX_BYTES = 1 << 34
# Below this feature size the direct route is as fast (measured at Baby scale, 384-d).
_GRAM_MIN_DIM = 1024
# Item rows per block of the half-stored Gram matrix.
_GRAM_BLOCK = 4096
# Size of one group's (users x I) product with the Gram matrix (user-interest kNN).
_USER_GROUP_BYTES = 1 << 29
# Users per slab of the final similarity product (one slab's sums stay in cache).
_USER_SLAB = 4096

Edges = tuple[np.ndarray, np.ndarray, np.ndarray]


def user_interest_features(train_csr: sp.csr_matrix, feat: np.ndarray) -> np.ndarray:
    """Each user's mean feature over their training items, ``P = R X / deg(u)`` (spec 1.2).

    Args:
        train_csr: (U, I) binary training matrix R (only its pattern is used).
        feat: (I, F) item features X.

    Returns:
        (U, F) float32; users without training items get zeros.
    """
    r = train_csr.tocsr()
    x = torch.from_numpy(np.ascontiguousarray(feat, dtype=np.float32))
    offsets = torch.from_numpy(r.indptr[:-1].astype(np.int64))
    indices = torch.from_numpy(r.indices.astype(np.int64))
    # embedding_bag "mean" gives zeros for users without items and runs multi-threaded.
    return F.embedding_bag(indices, x, offsets, mode="mean").numpy()


def _block_rows(n_cols: int, block_rows: int | None) -> int:
    if block_rows is not None:
        return max(1, int(block_rows))
    return max(_MIN_BLOCK_ROWS, _BLOCK_BYTES // (4 * max(n_cols, 1)))


def _inv_norm(sq: torch.Tensor) -> torch.Tensor:
    """1/sqrt(sq) with 0 where sq is not positive (zero rows compare as similarity 0)."""
    norm = sq.clamp_min(0).sqrt()
    return torch.where(norm > 0, 1.0 / norm.clamp_min(1e-30), torch.zeros_like(norm))


def _topk_blocks(
    n_rows: int, n_cols: int, k: int, sim_block: Callable[[int, int], torch.Tensor],
    block_rows: int | None,
) -> Edges:
    """Run ``sim_block(start, stop) -> (stop-start, n_cols)`` over row blocks, keep top-k."""
    k = min(k, n_cols)
    step = _block_rows(n_cols, block_rows)
    src = np.empty((n_rows, k), dtype=np.int64)
    val = np.empty((n_rows, k), dtype=np.float32)
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        values, index = torch.topk(sim_block(start, stop), k, dim=1)
        src[start:stop] = index.numpy()
        val[start:stop] = values.numpy()
    dst = np.repeat(np.arange(n_rows, dtype=np.int64), k)
    return dst, src.reshape(-1), (val.reshape(-1) / np.float32(k)).astype(np.float32)


def knn_graph(feat: np.ndarray, k: int, block_rows: int | None = None) -> Edges:
    """Cosine top-k kNN graph of the rows of ``feat``.

    Args:
        feat: (n, F) features.
        k: Neighbours kept per row (capped at n).
        block_rows: Rows per block (default: about 128 MB of similarities per block).

    Returns:
        ``(dst, src, weight)``: int64, int64, float32 arrays of n * k edges ``src -> dst``
        with weight ``cos(dst, src) / k``, grouped by ``dst`` in descending similarity.
    """
    x = torch.from_numpy(np.ascontiguousarray(feat, dtype=np.float32))
    n = x.shape[0]
    xn = x * _inv_norm((x * x).sum(1))[:, None]
    return _topk_blocks(n, n, k, lambda a, b: xn[a:b] @ xn.T, block_rows)


def knn_graph_differentiable(x: torch.Tensor, k: int, block_rows: int | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cosine top-k graph of the rows of ``x`` whose kept values carry gradients to ``x``.

    The top-k columns of each row are found without gradients, one row block of
    similarities at a time; only the kept cosines are then recomputed from those indices
    with autograd. Values and gradients equal those of the dense route (similarity matrix,
    top-k, scatter into a dense matrix) in O(n k) memory instead of O(n^2).

    Args:
        x: (n, d) features, on any device.
        k: Neighbours kept per row (capped at n), the row itself included.
        block_rows: Rows per similarity block (default: about 128 MB per block).

    Returns:
        ``(rows, cols, values)``: long (n k,), long (n k,) and (n k,) cosines on x's device;
        row ``rows[e]`` keeps column ``cols[e]``, rows in order, columns by similarity.
    """
    n = x.shape[0]
    k = min(int(k), n)
    xn = F.normalize(x, dim=1)  # (n, d); a zero row stays zero, so its cosines are 0
    index = torch.empty((n, k), dtype=torch.long, device=x.device)
    with torch.no_grad():
        step = _block_rows(n, block_rows)
        for start in range(0, n, step):
            stop = min(start + step, n)
            index[start:stop] = torch.topk(xn[start:stop] @ xn.T, k, dim=1).indices
    values = torch.einsum("nd,nkd->nk", xn, xn[index])  # (n, k), differentiable
    rows = torch.arange(n, device=x.device).repeat_interleave(k)
    return rows, index.reshape(-1), values.reshape(-1)


class _HalfGram:
    """The upper block triangle of ``G = X X^T``: item blocks ``A_a`` of ``size`` rows and
    ``blocks[a, c] = X[A_a] X[A_c]^T`` for ``a <= c`` only, half the memory of ``G``."""

    def __init__(self, x: torch.Tensor, size: int):
        n = x.shape[0]
        self.bounds = list(range(0, n, size)) + [n]
        self.n_blocks = len(self.bounds) - 1
        self.blocks: dict[tuple[int, int], torch.Tensor] = {}
        for a in range(self.n_blocks):
            xa = x[self.bounds[a] : self.bounds[a + 1]]
            for c in range(a, self.n_blocks):
                self.blocks[a, c] = xa @ x[self.bounds[c] : self.bounds[c + 1]].T

    def diagonal(self) -> torch.Tensor:
        return torch.cat([torch.diagonal(self.blocks[a, a]) for a in range(self.n_blocks)])

    def rows(self, a: int) -> torch.Tensor:
        """``G[A_a, :]`` as a new (|A_a|, n) tensor."""
        return torch.cat([self.blocks[a, c] if a <= c else self.blocks[c, a].T
                          for c in range(self.n_blocks)], dim=1)

    def sparse_rows_sum(self, parts: list[tuple[torch.Tensor, torch.Tensor]],
                        n_rows: int) -> torch.Tensor:
        """``R_b G`` for a sparse (n_rows, n) ``R_b`` given per item block ``a`` as
        (local column indices, offsets) of ``R_b[:, A_a]`` (binary).

        Only the rows with items in block ``a`` are computed and added for it (a user has a
        few items, so most rows have none in a given block): at Elec size that halves the
        time of a group of users against summing dense (n_rows, |A_c|) blocks.
        """
        out = torch.zeros((n_rows, self.bounds[-1]))
        for a, (ind, off) in enumerate(parts):
            if ind.numel() == 0:
                continue
            counts = torch.diff(torch.cat([off, torch.tensor([ind.numel()])]))
            active = torch.nonzero(counts)[:, 0]  # rows with items in block a
            active_off = off[active]  # their bags; the empty rows' bags have no length
            seg = None
            for c in range(self.n_blocks):
                lo, hi = self.bounds[c], self.bounds[c + 1]
                if a <= c:  # rows of blocks[a, c] are the items of block a
                    sums = F.embedding_bag(ind, self.blocks[a, c], active_off, mode="sum")
                    out[:, lo:hi].index_add_(0, active, sums)
                else:  # G[A_a, A_c] = blocks[c, a]^T: gather its columns instead
                    if seg is None:
                        seg = torch.repeat_interleave(torch.arange(n_rows), counts)
                    cols = self.blocks[c, a].index_select(1, ind).T.contiguous()  # (nnz, |A_c|)
                    out[:, lo:hi].index_add_(0, seg, cols)
        return out


def modality_knn(
    train_csr: sp.csr_matrix, feat: np.ndarray, item_k: int, user_k: int,
    block_rows: int | None = None, gram_max_bytes: int = _GRAM_MAX_BYTES,
    timings: dict[str, float] | None = None, gram_min_dim: int = _GRAM_MIN_DIM,
) -> tuple[Edges, Edges]:
    """Item semantic kNN of ``feat`` and user interest kNN of ``P = R feat / deg``.

    Args:
        train_csr: (U, I) binary training matrix R.
        feat: (I, F) item features of one modality.
        item_k: Neighbours per item.
        user_k: Neighbours per user.
        block_rows: Rows per block (default: sized automatically).
        gram_max_bytes: Largest item Gram matrix to hold; above it the user kNN compares
            the (U, F) interest features directly.
        timings: If given, receives the seconds spent on the ``item`` and ``user`` graphs.
        gram_min_dim: Smallest feature size that uses the Gram route; below it the direct
            product of the (U, F) interest features is as fast and needs no I x I memory.

    Returns:
        ``(item_edges, user_edges)``, each as returned by :func:`knn_graph`.
    """
    timings = {} if timings is None else timings
    r_sp = train_csr.tocsr().astype(np.float32)
    n_users, n_items = r_sp.shape
    x = torch.from_numpy(np.ascontiguousarray(feat, dtype=np.float32))
    if x.shape[0] != n_items:
        raise ValueError(f"features have {x.shape[0]} rows, the interaction matrix {n_items} items")
    t = time.perf_counter()
    if 4 * n_items * n_items > gram_max_bytes or x.shape[1] < gram_min_dim:
        items = knn_graph(feat, item_k, block_rows)
        timings["item"], t = time.perf_counter() - t, time.perf_counter()
        users = knn_graph(user_interest_features(r_sp, feat), user_k, block_rows)
        timings["user"] = time.perf_counter() - t
        return items, users

    # G is held as its upper block triangle: half the memory of the I x I matrix.
    size = int(block_rows) if block_rows is not None else _GRAM_BLOCK
    g = _HalfGram(x, size)
    inv_i = _inv_norm(g.diagonal())

    def item_block(a: int, b: int) -> torch.Tensor:
        sims = g.rows(a // size)  # (rows, I), a fresh tensor: normalise in place
        return sims.mul_(inv_i[a:b, None]).mul_(inv_i[None, :])

    items = _topk_blocks(n_items, n_items, item_k, item_block, size)
    timings["item"], t = time.perf_counter() - t, time.perf_counter()

    # Sparse-dense products as embedding-bag sums over each user's items: on CPU these are
    # several times faster than torch.sparse / scipy products with the same result.
    indptr = torch.from_numpy(r_sp.indptr.astype(np.int64))
    indices = torch.from_numpy(r_sp.indices.astype(np.int64))
    offsets = indptr[:-1]

    def bag_sum(table: torch.Tensor, a: int, b: int) -> torch.Tensor:
        """(b - a, cols): row u is the sum of table's rows over user u's training items."""
        lo, hi = int(indptr[a]), int(indptr[b])
        return F.embedding_bag(indices[lo:hi], table, offsets[a:b] - lo, mode="sum")

    # ||(R X)_u||^2 from blocks of R X (cheap: nnz(R) * F), independent of G.
    sq = torch.empty(n_users)
    step = _block_rows(x.shape[1], block_rows)
    for a in range(0, n_users, step):
        b = min(a + step, n_users)
        p = bag_sum(x, a, b)
        sq[a:b] = (p * p).sum(1)
    inv_u = _inv_norm(sq)

    # R split by item block (local column indices), to feed the half-stored G.
    split = []
    for a in range(g.n_blocks):
        part = r_sp[:, g.bounds[a] : g.bounds[a + 1]].tocsr()
        split.append((torch.from_numpy(part.indptr.astype(np.int64)),
                      torch.from_numpy(part.indices.astype(np.int64))))

    # R_b G is computed for a group of user blocks at once: each computation streams every
    # lower block of the half-stored G once (a column gather reads whole rows), so a group of
    # 2048 users instead of 512 cuts that traffic fourfold (at Elec size from about 2.9 TB
    # to 0.7 TB) for about 0.4 GB more memory.
    rows = block_rows or 2 * _block_rows(n_users, None)
    group_rows = rows * max(1, _USER_GROUP_BYTES // (4 * n_items * rows))
    group: dict[str, object] = {"start": None, "m": None}

    def user_block(a: int, b: int) -> torch.Tensor:
        start = a - a % group_rows
        if group["start"] != start:
            group["m"] = None  # free the last group's product first
            stop = min(start + group_rows, n_users)
            parts = []
            for ptr, ind in split:
                lo, hi = int(ptr[start]), int(ptr[stop])
                parts.append((ind[lo:hi], ptr[start:stop] - lo))
            group["m"], group["start"] = g.sparse_rows_sum(parts, stop - start), start
        m_t = group["m"][a - start : b - start].T.contiguous()  # (I, rows) = (R_b G)^T
        # (rows, U) = R_b G R^T, filled a slab of users at a time: each slab's sums are
        # transposed while they are still in cache instead of in one pass over (U, rows).
        s = torch.empty((b - a, n_users))
        for v0 in range(0, n_users, _USER_SLAB):
            v1 = min(v0 + _USER_SLAB, n_users)
            s[:, v0:v1] = bag_sum(m_t, v0, v1).T
        return s.mul_(inv_u[a:b, None]).mul_(inv_u[None, :])

    users = _topk_blocks(n_users, n_users, user_k, user_block, rows)
    timings["user"] = time.perf_counter() - t
    return items, users
