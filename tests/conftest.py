"""Shared fixtures: a tiny planted dataset on disk, an isolated cache folder, few threads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

# The suite runs on two cores; more threads only add contention, and on cores shared with
# other jobs OMP_NUM_THREADS=1 avoids threads waiting on each other.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 2))

TINY_USERS = 40
TINY_ITEMS = 30
TINY_TOPICS = 3


def write_tiny_dataset(path: str | Path, n_users: int = TINY_USERS, n_items: int = TINY_ITEMS,
                       seed: int = 0, features: bool = True, stand_in: bool = False) -> Path:
    """Write a small planted dataset in the REARM layout and return its folder.

    Users and items fall into ``TINY_TOPICS`` topics; each user has six training items, one
    valid and one test item, mostly from its own topic, and the item features reveal the
    topic, so any sensible model beats popularity. Ids are 0-based and every item and user
    occurs in training.

    Args:
        path: Folder to create (``train.npy``, ``valid.npy``, ``test.npy`` and features).
        n_users: U.
        n_items: I (a multiple of ``TINY_TOPICS`` keeps topics equal in size).
        seed: Generator seed.
        features: Write ``image_feat.npy`` (I x 16) and ``text_feat.npy`` (I x 8).
        stand_in: Also write ``features.json`` marking the features as seeded stand-ins.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    item_topic = np.arange(n_items) % TINY_TOPICS
    splits: dict[str, list[tuple[int, int]]] = {"train": [], "valid": [], "test": []}
    for u in range(n_users):
        own = np.flatnonzero(item_topic == u % TINY_TOPICS)
        other = np.flatnonzero(item_topic != u % TINY_TOPICS)
        items = np.concatenate([rng.choice(own, 7, replace=False), rng.choice(other, 1)])
        rng.shuffle(items)
        splits["train"] += [(u, int(i)) for i in items[:6]]
        splits["valid"].append((u, int(items[6])))
        splits["test"].append((u, int(items[7])))
    # Every item occurs in training: give uncovered items to a user of their topic.
    seen = {i for _, i in splits["train"]}
    for i in range(n_items):
        if i not in seen:
            u = int(rng.choice(np.flatnonzero(np.arange(n_users) % TINY_TOPICS == item_topic[i])))
            if (u, i) not in splits["valid"] + splits["test"]:
                splits["train"].append((u, i))
            else:
                splits["train"].append(((u + TINY_TOPICS) % n_users, i))
    for name, pairs in splits.items():
        arr = np.unique(np.asarray(pairs, dtype=np.int64), axis=0).T  # (2, N)
        np.save(path / f"{name}.npy", np.ascontiguousarray(arr))
    if features:
        centres_v = rng.normal(size=(TINY_TOPICS, 16))
        centres_t = rng.normal(size=(TINY_TOPICS, 8))
        image = np.maximum(centres_v[item_topic] + 0.3 * rng.normal(size=(n_items, 16)), 0)
        text = centres_t[item_topic] + 0.3 * rng.normal(size=(n_items, 8))
        np.save(path / "image_feat.npy", image.astype(np.float32))
        np.save(path / "text_feat.npy", text.astype(np.float32))
    if stand_in:
        (path / "features.json").write_text(json.dumps(
            {"stand_in": True, "seed": seed, "note": "tiny test features"}))
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test writes caches into its own folder, never the user's cache."""
    monkeypatch.setenv("REARM_DGL_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    """Folder of a 40-user / 30-item planted dataset with small features."""
    return write_tiny_dataset(tmp_path / "tiny")


@pytest.fixture
def tiny_data(tiny_dataset):
    """The tiny dataset loaded as :class:`~rearm_dgl.data.dataset.Interactions`."""
    from rearm_dgl.config import DataConfig
    from rearm_dgl.data import load_dataset

    return load_dataset(DataConfig(dataset=str(tiny_dataset)))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: tiny tensors gain nothing from threads, and one thread
    is bit-for-bit deterministic and steadier on shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
