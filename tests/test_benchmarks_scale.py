"""The Elec-shaped generator of benchmarks/scale.py, at a small size."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import scale  # noqa: E402


def test_interactions_have_the_requested_shape_and_are_distinct():
    rng = np.random.default_rng(0)
    users, items = scale.interactions(rng, n_users=500, n_items=300, n=4000)
    assert users.size == items.size == 4000
    assert np.unique(users * 300 + items).size == 4000  # distinct pairs
    assert np.bincount(users, minlength=500).min() >= scale.MIN_DEGREE
    assert np.bincount(items, minlength=300).min() >= 1
    assert np.all(np.diff(users) >= 0)
    # Power-law popularity: the top 10% of items hold far more than 10% of the pairs.
    counts = np.sort(np.bincount(items, minlength=300))[::-1]
    assert counts[:30].sum() > 0.25 * 4000


def test_split_is_eight_one_one_per_user():
    rng = np.random.default_rng(1)
    users, _ = scale.interactions(rng, n_users=400, n_items=200, n=5000)
    label = scale.split_per_user(users, rng)
    for u in range(400):
        lab = label[users == u]
        held = max(1, round(lab.size / 10))
        assert (lab == 1).sum() == held and (lab == 2).sum() == held
    share = np.bincount(label) / label.size
    assert abs(share[0] - 0.8) < 0.1 and abs(share[1] - share[2]) < 1e-9
