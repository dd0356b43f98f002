"""kNN graphs and user interest features against dense, loop-based references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from rearm_dgl.graphs import knn
from rearm_dgl.graphs.knn import knn_graph, modality_knn, user_interest_features


def _reference_knn(x: np.ndarray, k: int) -> dict[int, dict[int, float]]:
    """Row -> {kept column: cos / k}, from the full dense cosine matrix and a sort per row."""
    x = x.astype(np.float64)
    out = {}
    for i in range(x.shape[0]):
        sims = []
        for j in range(x.shape[0]):
            ni, nj = np.linalg.norm(x[i]), np.linalg.norm(x[j])
            sims.append(0.0 if ni == 0 or nj == 0 else float(x[i] @ x[j] / (ni * nj)))
        order = sorted(range(len(sims)), key=lambda j: -sims[j])[: min(k, len(sims))]
        out[i] = {j: sims[j] / min(k, len(sims)) for j in order}
    return out


def _as_rows(edges) -> dict[int, dict[int, float]]:
    dst, src, w = edges
    assert dst.dtype == np.int64 and src.dtype == np.int64 and w.dtype == np.float32
    out: dict[int, dict[int, float]] = {}
    for d, s, v in zip(dst.tolist(), src.tolist(), w.tolist()):
        assert s not in out.setdefault(d, {}), "duplicate edge"
        out[d][s] = v
    return out


def _assert_same(got, ref, skip_rows=()):
    assert set(got) == set(ref)
    for i in ref:
        if i in skip_rows:
            assert len(got[i]) == len(ref[i])
            continue
        assert set(got[i]) == set(ref[i]), f"row {i}"
        for j in ref[i]:
            assert got[i][j] == pytest.approx(ref[i][j], abs=1e-5)


@pytest.mark.parametrize("block_rows", [None, 1, 7])
@pytest.mark.parametrize("k", [1, 4, 30])
def test_knn_matches_dense_reference(k, block_rows):
    x = np.random.default_rng(0).standard_normal((23, 5)).astype(np.float32)
    got = _as_rows(knn_graph(x, k, block_rows=block_rows))
    _assert_same(got, _reference_knn(x, k))
    # Self is kept (self-similarity is the maximum) with weight 1/k.
    kk = min(k, 23)
    assert all(got[i][i] == pytest.approx(1 / kk, abs=1e-5) for i in got)
    assert all(len(v) == kk for v in got.values())


def test_zero_rows_give_zero_weights_not_nan():
    x = np.random.default_rng(1).standard_normal((10, 4)).astype(np.float32)
    x[3] = 0
    dst, src, w = knn_graph(x, 3)
    assert np.isfinite(w).all()
    assert np.all(w[dst == 3] == 0)
    assert np.all(w[src == 3] <= 0 + 1e-7) or not np.any(src[dst != 3] == 3)
    ref = _reference_knn(x, 3)
    got = _as_rows((dst, src, w))
    # Row 3 is all ties at 0 (any 3 columns are right); other rows may hold row 3 at 0.
    for i in got:
        if i != 3:
            assert sorted(got[i].values()) == pytest.approx(sorted(ref[i].values()), abs=1e-5)


def _random_interactions(n_users=17, n_items=11, seed=2):
    """Random R with one empty user and otherwise distinct rows (no exact similarity ties)."""
    rng = np.random.default_rng(seed)
    while True:
        dense = (rng.random((n_users, n_items)) < 0.4).astype(np.float32)
        dense[5] = 0  # a user without training items
        nonempty = dense[dense.sum(1) > 0]
        if len(np.unique(nonempty, axis=0)) == len(nonempty):
            return sp.csr_matrix(dense), dense


def test_user_interest_features_is_mean_over_training_items():
    r, dense = _random_interactions()
    x = np.random.default_rng(3).standard_normal((11, 6)).astype(np.float32)
    got = user_interest_features(r, x)
    assert got.dtype == np.float32 and got.shape == (17, 6)
    for u in range(17):
        items = np.flatnonzero(dense[u])
        want = x[items].mean(0) if items.size else np.zeros(6)
        np.testing.assert_allclose(got[u], want, atol=1e-5)


@pytest.mark.parametrize("gram", [True, False])
@pytest.mark.parametrize("block_rows,group_bytes,slab",
                         [(None, 1 << 29, 4096), (4, 1 << 29, 4096), (4, 1, 5), (4, 400, 3)])
def test_modality_knn_matches_reference(gram, block_rows, group_bytes, slab, monkeypatch):
    """group_bytes 1: one user block per Gram product; 400: groups of 8 users in blocks
    of 4, the last group partial (17 users); slabs of 5 or 3 users, the last partial."""
    monkeypatch.setattr(knn, "_USER_GROUP_BYTES", group_bytes)
    monkeypatch.setattr(knn, "_USER_SLAB", slab)
    r, dense = _random_interactions()
    x = np.random.default_rng(4).standard_normal((11, 6)).astype(np.float32)
    items, users = modality_knn(r, x, item_k=3, user_k=5, block_rows=block_rows,
                                gram_max_bytes=1 << 30 if gram else 0, gram_min_dim=0)
    _assert_same(_as_rows(items), _reference_knn(x, 3))
    p = user_interest_features(r, x)
    # Users without items have rows of ties at similarity 0 (any columns are right).
    empty = set(np.flatnonzero(dense.sum(1) == 0).tolist())
    assert 5 in empty
    _assert_same(_as_rows(users), _reference_knn(p, 5), skip_rows=empty)
    assert np.all(users[2][np.isin(users[0], list(empty))] == 0)


def test_modality_knn_rejects_misaligned_features():
    r, _ = _random_interactions()
    with pytest.raises(ValueError, match="rows"):
        modality_knn(r, np.ones((10, 3), np.float32), 2, 2)
