"""The in-memory dataset every other module consumes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True, eq=False)
class Interactions:
    """One dataset: id counts, the three splits, features lined up with item ids.

    Attributes:
        name: Dataset name (``demo``, ``baby``, or the directory name).
        source: Where it came from: a directory path, or ``"builtin:demo"``.
        n_users: Number of users U (ids 0..U-1).
        n_items: Number of items I (ids 0..I-1).
        train: (2, N) int64, row 0 user ids, row 1 item ids.
        valid: (2, N) int64; users without training rows are already dropped.
        test: (2, N) int64; likewise.
        image_feat: (I, F_v) float32 or None.
        text_feat: (I, F_t) float32 or None.
        features_note: Empty for real features; otherwise a sentence saying the features
            are seeded stand-ins (every output that reports numbers repeats it).
        dropped: Rows dropped per split because their user has no training row.
        fingerprint: Content hash of the split and feature files (cache and provenance key).
        cache_dir: The folder this dataset's caches are written to.
    """

    name: str
    source: str
    n_users: int
    n_items: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    image_feat: np.ndarray | None = None
    text_feat: np.ndarray | None = None
    features_note: str = ""
    dropped: dict[str, int] = field(default_factory=dict)
    fingerprint: str = ""
    cache_dir: Path | None = None

    @property
    def has_features(self) -> bool:
        return self.image_feat is not None and self.text_feat is not None

    def without_features(self) -> Interactions:
        """This dataset without its feature arrays, for a run whose model already holds them.

        A model copies the features it trains (REARM's tables) or keeps a view of the ones it
        does not, so once it is built the dataset's own reference only holds memory: Baby's
        image and text features are 0.12 GiB, Amazon-Elec's about 1 GB. Everything else is
        shared, the derived matrices already computed included.
        """
        lean = dataclasses.replace(self, image_feat=None, text_feat=None)
        for name, attr in vars(type(self)).items():  # the cached_property values computed
            if isinstance(attr, cached_property) and name in self.__dict__:
                lean.__dict__[name] = self.__dict__[name]
        return lean

    def split(self, name: str) -> np.ndarray:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {name!r}")
        return getattr(self, name)

    def split_csr(self, name: str) -> sp.csr_matrix:
        """U x I binary CSR matrix of one split (float32 ones, sorted indices)."""
        return _csr(self.split(name), self.n_users, self.n_items)

    @cached_property
    def train_csr(self) -> sp.csr_matrix:
        """U x I binary CSR of the training interactions (R in the spec)."""
        return self.split_csr("train")

    @cached_property
    def known_csr(self) -> sp.csr_matrix:
        """U x I binary CSR of train + valid + test (the ``all_known`` negative exclusion)."""
        pairs = np.concatenate([self.train, self.valid, self.test], axis=1)
        return _csr(pairs, self.n_users, self.n_items)

    @cached_property
    def user_degree(self) -> np.ndarray:
        """(U,) training items per user."""
        return np.diff(self.train_csr.indptr).astype(np.int64)

    @cached_property
    def item_degree(self) -> np.ndarray:
        """(I,) training users per item."""
        return np.bincount(self.train[1], minlength=self.n_items).astype(np.int64)

    @property
    def cold_users(self) -> np.ndarray:
        """Ids of users with no training row (they only occur in valid/test, if at all)."""
        return np.flatnonzero(self.user_degree == 0)

    @property
    def cold_items(self) -> np.ndarray:
        """Ids of items with no training row."""
        return np.flatnonzero(self.item_degree == 0)

    @property
    def density(self) -> float:
        """Fraction of the U x I matrix filled by train + valid + test pairs."""
        total = self.train.shape[1] + self.valid.shape[1] + self.test.shape[1]
        return total / max(1, self.n_users * self.n_items)

    def summary(self) -> dict[str, object]:
        return {
            "name": self.name, "source": self.source, "users": self.n_users,
            "items": self.n_items, "train": int(self.train.shape[1]),
            "valid": int(self.valid.shape[1]), "test": int(self.test.shape[1]),
            "image_feat": None if self.image_feat is None else list(self.image_feat.shape),
            "text_feat": None if self.text_feat is None else list(self.text_feat.shape),
            "features_note": self.features_note, "dropped": dict(self.dropped),
            "fingerprint": self.fingerprint,
        }


def _csr(pairs: np.ndarray, n_rows: int, n_cols: int) -> sp.csr_matrix:
    data = np.ones(pairs.shape[1], dtype=np.float32)
    m = sp.csr_matrix((data, (pairs[0], pairs[1])), shape=(n_rows, n_cols))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m
