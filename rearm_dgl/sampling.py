"""Seeded BPR batches: every training pair once per epoch, one uniform negative each.

    sampler = BPRSampler(data, negatives="all_known", batch_size=2048, seed=2025)
    for batch in sampler.batches(epoch, device):   # Batch(users, pos, neg), long (B,)
        ...

An epoch's triples reach the device in one copy; its batches are views of it. A copy per
batch would make the host wait for the device before every batch (a copy from pageable
memory synchronises its stream), so launching one batch could never overlap the last one's
kernels.

An epoch's batches depend only on ``(seed, epoch)``, so a run resumed at epoch ``e`` draws
exactly the batches the uninterrupted run would have drawn.

Negatives are drawn exactly, without rejection: a user's allowed items (those not excluded)
are numbered 0..n_allowed-1 in item order, a uniform rank ``r`` is drawn per positive, and the
item of rank ``r`` is found with one ``searchsorted`` over all users' excluded items at once.
With the user's excluded items ``e_0 < e_1 < ...``, ``e_k - k`` is the number of allowed items
below ``e_k``, so the item of rank ``r`` is ``r + #{k : e_k - k <= r}``.

The candidates are every item for ``all_known`` (the authors' code), and only the items that
occur in the training split for ``train_only``, as MMRec draws them (its sampler picks from the
training split's item ids). There the same ranking runs over the candidates' positions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch

from rearm_dgl.data.dataset import Interactions
from rearm_dgl.errors import DataError
from rearm_dgl.models.base import Batch

NEGATIVE_MODES = ("all_known", "train_only")


class BPRSampler:
    """Shuffled (user, positive, negative) batches over the training pairs.

    Args:
        data: The dataset; its training pairs are the positives.
        negatives: ``"all_known"`` draws from every item except those the user has in train,
            valid or test (``data.known_csr``); ``"train_only"`` draws from the items that occur
            in the training split, except the user's training items (``data.train_csr``), as
            MMRec does.
        batch_size: Triples per batch; the last batch of an epoch may be smaller.
        seed: Base seed; epoch ``e`` uses ``np.random.default_rng([seed, e])``.

    Raises:
        ValueError: Unknown ``negatives`` mode or ``batch_size < 1``.
        DataError: A training user has no item left to draw as a negative.
    """

    def __init__(self, data: Interactions,
                 negatives: Literal["all_known", "train_only"] = "all_known",
                 batch_size: int = 2048, seed: int = 2025):
        if negatives not in NEGATIVE_MODES:
            raise ValueError(f"negatives must be one of {NEGATIVE_MODES}, got {negatives!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.negatives = negatives
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.n_items = int(data.n_items)
        self._users = np.ascontiguousarray(data.train[0], dtype=np.int64)  # (N,)
        self._pos = np.ascontiguousarray(data.train[1], dtype=np.int64)  # (N,)

        if negatives == "all_known":
            excluded, self._pool = data.known_csr, None  # candidates: every item
        else:
            # Candidates: the items of the training split, in id order (C,). A user's training
            # items are all among them, so exclusions map to candidate positions exactly.
            excluded, self._pool = data.train_csr, np.unique(self._pos)
        excluded = excluded.sorted_indices() if not excluded.has_sorted_indices else excluded
        self._n_cand = self.n_items if self._pool is None else int(self._pool.size)
        indptr = excluded.indptr.astype(np.int64)
        n_excl = np.diff(indptr)  # (U,)
        self._allowed = self._n_cand - n_excl  # (U,) candidates each user may draw
        self._start = indptr[:-1]  # (U,) where each user's keys begin
        cols = excluded.indices.astype(np.int64)
        if self._pool is not None:
            cols = np.searchsorted(self._pool, cols)  # item id -> candidate position
        rank_in_row = np.arange(cols.size, dtype=np.int64) - np.repeat(self._start, n_excl)
        rows = np.repeat(np.arange(n_excl.size, dtype=np.int64), n_excl)
        # Globally sorted: rows ascend and e_k - k is non-decreasing in [0, C) within a row.
        self._keys = rows * self._n_cand + (cols - rank_in_row)

        stuck = np.unique(self._users[self._allowed[self._users] <= 0])
        if stuck.size:
            shown = ", ".join(str(u) for u in stuck[:5]) + (" ..." if stuck.size > 5 else "")
            scope = (f"all {self.n_items} items" if self._pool is None
                     else f"all {self._n_cand} items of the training split")
            raise DataError(
                data.source,
                f"user(s) {shown} interacted with {scope}, so no negative can be drawn with "
                f"negatives={negatives!r}",
                "remove these users from the dataset"
                + (", or set train.negatives=train_only" if negatives == "all_known" else ""))

    @property
    def n_pairs(self) -> int:
        """Training pairs, i.e. triples per epoch."""
        return int(self._users.size)

    def __len__(self) -> int:
        """Batches per epoch (the last one may be partial)."""
        return -(-self.n_pairs // self.batch_size)

    def sample_negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uniform allowed item per entry of ``users`` (int64 array), drawn from ``rng``."""
        users = np.asarray(users, dtype=np.int64)
        ranks = rng.integers(0, self._allowed[users], dtype=np.int64)  # (n,) rank among allowed
        query = users * self._n_cand + ranks
        n_before = np.searchsorted(self._keys, query, side="right") - self._start[users]
        position = ranks + n_before  # (n,) among the candidates
        return position if self._pool is None else self._pool[position]

    def epoch_arrays(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The epoch's shuffled ``(users, pos, neg)`` int64 arrays, all (N,)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        order = rng.permutation(self.n_pairs)
        users = self._users[order]
        return users, self._pos[order], self.sample_negatives(users, rng)

    def batches(self, epoch: int, device: torch.device | str | None = None
                ) -> Iterator[Batch]:
        """Yield the epoch's batches as :class:`~rearm_dgl.models.base.Batch`.

        Args:
            epoch: The epoch, which with the seed fixes the order and the negatives.
            device: Where the batches live (default: the CPU). The whole epoch is copied
                there at once, so the loop over batches does no transfer of its own.
        """
        triples = torch.from_numpy(np.stack(self.epoch_arrays(epoch)))  # (3, N)
        if device is not None:
            triples = triples.to(device)
        users, pos, neg = triples
        for start in range(0, self.n_pairs, self.batch_size):
            end = start + self.batch_size
            yield Batch(users[start:end], pos[start:end], neg[start:end])
