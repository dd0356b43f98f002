"""Checks across the files of one dataset.

Every problem raises :class:`~rearm_dgl.errors.DataError` naming the file, the problem and
the fix. The one soft case is MMRec's: valid or test rows whose user has no training row
are dropped and counted (a logged warning, not an error).

Counts follow the ids: ``n_users`` is the largest user id + 1 over all splits, ``n_items``
likewise for items. Feature matrices must have exactly ``n_items`` rows. Ids must be
re-indexed: an id range far larger than the number of distinct ids (raw ids from the source
data) is refused, since every id up to the largest one gets an embedding row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rearm_dgl.data.io import IMAGE_FILE, SPLITS, TEXT_FILE, RawDataset
from rearm_dgl.errors import DataError

log = logging.getLogger("rearm_dgl.data")

# Ids at or above this are rejected: they would make the CSR matrices absurdly large and
# usually mean raw (not re-indexed) ids were saved.
MAX_ID = 2**31 - 1
# Ids may leave gaps (a filtered subset of a re-indexed dataset), but an id range larger than
# SPARSE_FACTOR x the distinct ids plus SPARSE_SLACK wastes most of the embedding rows and
# usually means raw ids: 200 items with ids up to 100,000,001 asked for 25.6 GB of embeddings.
SPARSE_FACTOR = 2
SPARSE_SLACK = 100_000


@dataclass
class Validated:
    """The checked content of a dataset.

    Attributes:
        n_users: Largest user id + 1 over all splits (before dropping).
        n_items: Largest item id + 1 over all splits.
        splits: Split name -> (2, N) int64; valid/test without users that have no train row.
        dropped: Split name -> rows dropped for that reason (valid and test only).
    """

    n_users: int
    n_items: int
    splits: dict[str, np.ndarray]
    dropped: dict[str, int] = field(default_factory=dict)


def _where(raw: RawDataset, split: str) -> str:
    path = raw.split_paths[split]
    return str(path) if raw.layout == "npy" else f"{path} ({split} rows, x_label)"


def check_pairs(pairs: np.ndarray, where: str | Path, split: str) -> None:
    """Shape, dtype, emptiness, sign and magnitude of one split's ids."""
    if pairs.dtype != np.int64 or pairs.ndim != 2 or pairs.shape[0] != 2:
        raise DataError(where, f"{split}: expected an int64 array of shape (2, N), got "
                        f"{pairs.dtype} {pairs.shape}", "save (2, N) int64 user/item ids")
    if pairs.shape[1] == 0:
        raise DataError(where, f"{split} split is empty",
                        "every split needs at least one (user, item) pair; re-create the "
                        "8:1:1 split")
    low = pairs.min(axis=1)
    if (low < 0).any():
        kind = "user" if low[0] < 0 else "item"
        raise DataError(where, f"{split}: negative {kind} id {int(low.min())}",
                        "ids must be 0-based non-negative integers (re-index the raw ids)")
    high = pairs.max(axis=1)
    if (high >= MAX_ID).any():
        kind = "user" if high[0] >= MAX_ID else "item"
        raise DataError(where, f"{split}: {kind} id {int(high.max())} is out of range "
                        f"(ids must be < {MAX_ID})",
                        "re-index ids to 0..n-1; raw ids from the source data cannot be "
                        "used directly")


def check_dense_ids(splits: dict[str, np.ndarray], wheres: dict[str, str]) -> None:
    """Refuse ids far beyond the number of distinct ids (raw, not re-indexed, ids)."""
    for row, kind in ((0, "user"), (1, "item")):
        ids = np.concatenate([splits[s][row] for s in SPLITS])
        span = int(ids.max()) + 1
        distinct = int(np.unique(ids).size)
        if span > SPARSE_FACTOR * distinct + SPARSE_SLACK:
            split = max(SPLITS, key=lambda s: int(splits[s][row].max()))
            raise DataError(wheres[split], f"{kind} ids go up to {span - 1:,} but only "
                            f"{distinct:,} distinct {kind} ids occur; these look like raw ids "
                            f"(each id up to the largest gets an embedding row)",
                            f"re-index the {kind} ids to 0..{distinct - 1} over all splits "
                            f"together (np.unique(ids, return_inverse=True)) and reorder "
                            f"the feature rows the same way")


def _keys(pairs: np.ndarray, n_items: int) -> np.ndarray:
    return pairs[0] * np.int64(n_items) + pairs[1]


def check_duplicates(pairs: np.ndarray, n_items: int, where: str, split: str) -> None:
    keys = np.sort(_keys(pairs, n_items))
    dup = keys[1:] == keys[:-1]
    if dup.any():
        k = int(keys[1:][dup][0])
        n_dup = int(len(keys) - len(np.unique(keys)))
        raise DataError(where, f"{split}: {n_dup} duplicate (user, item) pair(s), e.g. "
                        f"user {k // n_items}, item {k % n_items}",
                        "keep each pair once per split (np.unique(pairs, axis=1))")


def check_overlap(splits: dict[str, np.ndarray], n_items: int, raw: RawDataset) -> None:
    keys = {s: _keys(splits[s], n_items) for s in SPLITS}
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        common = np.intersect1d(keys[a], keys[b], assume_unique=True)
        if common.size:
            k = int(common[0])
            raise DataError(_where(raw, b), f"{common.size} (user, item) pair(s) appear in "
                            f"both {a} and {b}, e.g. user {k // n_items}, item {k % n_items}",
                            "each interaction belongs to exactly one split; remove it from "
                            "all but one")


def check_features(feat: np.ndarray, path: Path, n_items: int) -> None:
    """Rows equal the item count; every value finite."""
    if feat.shape[0] != n_items:
        detail = (f"item ids go up to {n_items - 1}" if feat.shape[0] < n_items
                  else f"the splits use only item ids 0..{n_items - 1}")
        raise DataError(path, f"has {feat.shape[0]} rows but the dataset has {n_items} items "
                        f"({detail})", "row i must be the features of item i, one row per "
                        "item id; re-export the features with the split's item ids")
    if feat.shape[1] == 0:
        raise DataError(path, "has zero feature columns", "save (items, dims) with dims >= 1")
    finite = np.isfinite(feat)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        kind = "NaN" if np.isnan(feat[rows[0]]).any() else "inf"
        raise DataError(path, f"{kind} values in {rows.size} row(s), first at item {rows[0]}",
                        "replace missing features (e.g. with the column mean or zeros) "
                        "before saving")


def drop_cold_eval_rows(splits: dict[str, np.ndarray], n_users: int,
                        where: str = "") -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Drop valid/test rows whose user has no training row, as MMRec does.

    Returns:
        The filtered splits and the number of rows dropped per split. A non-zero count is
        logged as a warning (a plain line, no source location).
    """
    has_train = np.zeros(n_users, dtype=bool)
    has_train[splits["train"][0]] = True
    out = dict(splits)
    dropped: dict[str, int] = {}
    for s in ("valid", "test"):
        keep = has_train[splits[s][0]]
        dropped[s] = int((~keep).sum())
        if dropped[s]:
            out[s] = np.ascontiguousarray(splits[s][:, keep])
    if any(dropped.values()):
        msg = (f"{where}: dropped {dropped['valid']} valid and {dropped['test']} test rows "
               f"whose user has no training row (as MMRec does)")
        log.warning(msg)
    return out, dropped


def validate(raw: RawDataset) -> Validated:
    """Run every cross-file check on what :func:`~rearm_dgl.data.io.read_directory` read.

    Raises:
        DataError: for the first problem found, naming its file.
    """
    for s in SPLITS:
        check_pairs(raw.splits[s], _where(raw, s), s)
    check_dense_ids(raw.splits, {s: _where(raw, s) for s in SPLITS})
    n_users = int(max(raw.splits[s][0].max() for s in SPLITS)) + 1
    n_items = int(max(raw.splits[s][1].max() for s in SPLITS)) + 1
    for s in SPLITS:
        check_duplicates(raw.splits[s], n_items, _where(raw, s), s)
    check_overlap(raw.splits, n_items, raw)
    for feat, name in ((raw.image_feat, IMAGE_FILE), (raw.text_feat, TEXT_FILE)):
        if feat is not None:
            check_features(feat, raw.directory / name, n_items)
    splits, dropped = drop_cold_eval_rows(raw.splits, n_users, str(raw.directory))
    for s in ("valid", "test"):
        if splits[s].shape[1] == 0:
            raise DataError(_where(raw, s), f"{s} split is empty after dropping "
                            f"{dropped[s]} rows whose user has no training row",
                            "give the valid/test users training interactions (per-user "
                            "8:1:1 split)")
    return Validated(n_users=n_users, n_items=n_items, splits=splits, dropped=dropped)
