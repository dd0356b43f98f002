"""Co-occurrence graphs (spec 1.6) against a dense, loop-based reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from rearm_dgl.graphs.cooccurrence import cooccurrence_edges


def _dense_r(seed=0, n=30, m=12, p=0.12):
    rng = np.random.default_rng(seed)
    dense = (rng.random((n, m)) < p).astype(np.float32)
    dense[0] = 0  # a node with no interaction at all
    dense[1] = 0
    dense[1, m - 1] = 1  # a node whose only interaction nobody shares
    dense[:, m - 1] = 0
    dense[1, m - 1] = 1
    return dense


def _reference(dense, n_co, degree):
    """Per row: true neighbour counts, and the fallback (top-n_co by degree, distinct)."""
    n = dense.shape[0]
    counts = {}
    for i in range(n):
        counts[i] = {}
        for j in range(n):
            if i != j:
                c = int(sum(dense[i, t] * dense[j, t] for t in range(dense.shape[1])))
                if c > 0:
                    counts[i][j] = c
    top = sorted(range(n), key=lambda j: -degree[j])[:n_co]
    return counts, top


def _rows(edges):
    out = {}
    for d, s, w in zip(*(a.tolist() for a in edges)):
        assert s not in out.setdefault(d, {}), "duplicate (dst, src) edge"
        out[d][s] = w
    return out


@pytest.mark.parametrize("mode", ["softmax", "mean"])
@pytest.mark.parametrize("n_co", [1, 3, 8])
@pytest.mark.parametrize("max_block_paths", [1, 1_000_000])
def test_cooccurrence_matches_reference(mode, n_co, max_block_paths):
    dense = _dense_r()
    n = dense.shape[0]
    degree = np.arange(n, dtype=np.float64)[::-1] * 3 + 1  # distinct fallback degrees
    edges = cooccurrence_edges(sp.csr_matrix(dense), n_co, degree, mode, seed=7,
                               max_block_paths=max_block_paths)
    assert edges[0].dtype == np.int64 and edges[2].dtype == np.float32
    got = _rows(edges)
    counts, top = _reference(dense, n_co, degree)
    assert set(got) == set(range(n))
    n_edges = 0
    for i in range(n):
        row, nb = got[i], counts[i]
        assert sum(row.values()) == pytest.approx(1.0, abs=1e-6)
        m = len(nb)
        if m == 0:  # fallback: the n_co nodes of highest degree
            assert sorted(row) == sorted(top)
            vals = np.array([degree[j] for j in top]) / sum(degree[j] for j in top)
            want = np.exp(vals) / np.exp(vals).sum() if mode == "softmax" else np.full(n_co, 1 / n_co)
            for j, w in zip(top, want):
                assert row[j] == pytest.approx(w, abs=1e-6)
        elif m >= n_co:  # top n_co by count, ties in any order
            assert len(row) == n_co
            assert all(j in nb for j in row)
            kept = sorted((nb[j] for j in row), reverse=True)
            assert kept == sorted(nb.values(), reverse=True)[:n_co]
            cnt = np.array([nb[j] for j in row], dtype=np.float64)
            want = np.exp(cnt - cnt.max()) / np.exp(cnt - cnt.max()).sum()
            if mode == "mean":
                want = np.full(n_co, 1 / n_co)
            np.testing.assert_allclose(list(row.values()), want, atol=1e-6)
        else:  # padded: every neighbour present, multiplicities >= 1 summing to n_co
            assert set(row) == set(nb)
            base = np.array([np.exp(nb[j]) if mode == "softmax" else 1.0 for j in row])
            ratio = np.array(list(row.values())) / base
            mult = ratio / ratio.sum() * n_co
            np.testing.assert_allclose(mult, np.round(mult), atol=1e-4)
            assert np.all(np.round(mult) >= 1)
        n_edges += len(row)
    assert n_edges == len(edges[0])
    assert any(0 < len(counts[i]) < n_co for i in range(n)) or n_co == 1


def test_padding_is_seeded_and_duplicates_add_up():
    # Node 0 has exactly 2 neighbours (1 and 2): padded to 6 entries out of {1, 2}.
    dense = np.zeros((4, 3), np.float32)
    dense[0, [0, 1]] = 1
    dense[1, 0] = dense[2, 1] = 1
    dense[3, 2] = 1
    r = sp.csr_matrix(dense)
    deg = np.array([2.0, 1, 1, 1])
    a = cooccurrence_edges(r, 6, deg, "mean", seed=1)
    b = cooccurrence_edges(r, 6, deg, "mean", seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    row0 = {s: w for d, s, w in zip(*a) if d == 0}
    assert set(row0) == {1, 2}
    assert sum(row0.values()) == pytest.approx(1.0)
    assert all(round(w * 6, 5) == round(w * 6) and w * 6 >= 1 for w in row0.values())
    # Different seeds eventually give different multiplicities.
    seen = {tuple(sorted({s: round(w * 6) for d, s, w in zip(*cooccurrence_edges(
        r, 6, deg, "mean", seed=s)) if d == 0}.items())) for s in range(20)}
    assert len(seen) > 1


def test_single_node_and_bad_mode():
    r = sp.csr_matrix(np.ones((1, 2), np.float32))
    dst, src, w = cooccurrence_edges(r, 3, np.array([2.0]), "softmax")
    assert dst.tolist() == [0] and src.tolist() == [0] and w.tolist() == [1.0]
    with pytest.raises(ValueError, match="mode"):
        cooccurrence_edges(r, 3, np.array([2.0]), "max")


@pytest.mark.parametrize("row_scale", [1, 2**56])
def test_packed_sort_orders_like_lexsort(row_scale):
    """Row, count descending, seeded column priority; the 3-key fallback for wide keys."""
    from rearm_dgl.graphs.cooccurrence import _sort_rows

    rng = np.random.default_rng(0)
    n = 50
    row = rng.integers(0, 20, 3000) * row_scale
    col = rng.integers(0, n, 3000)
    cnt = rng.integers(1, 9, 3000).astype(np.float32)
    prio = rng.permutation(n)
    inv = np.empty_like(prio)
    inv[prio] = np.arange(n)
    key = np.unique(np.stack([row, col]), axis=1)  # distinct (row, col), as in R R^T
    row, col, cnt = key[0], key[1], cnt[: key.shape[1]]
    order = np.lexsort((prio[col], -cnt, row))
    got = _sort_rows(row, col, cnt, prio, inv)
    for a, b in zip(got, (row[order], col[order], cnt[order])):
        np.testing.assert_array_equal(a, b)
