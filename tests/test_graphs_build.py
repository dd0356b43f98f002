"""The full heterograph (edge counts, interaction weights, statistics) and its cache."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

from rearm_dgl.config import GraphConfig
from rearm_dgl.data.dataset import Interactions
from rearm_dgl.graphs import build_graph, graph_stats, load_or_build_graph
from rearm_dgl.graphs import cache as graph_cache
from rearm_dgl.graphs import schema as S

N_USERS, N_ITEMS = 40, 25


def _data(tmp_path=None, features=True, seed=0) -> Interactions:
    rng = np.random.default_rng(seed)
    dense = rng.random((N_USERS, N_ITEMS)) < 0.15
    dense[:, N_ITEMS - 1] = False  # an item nobody trained on
    dense[3] = False
    dense[3, 0] = True
    pairs = np.argwhere(dense).T.astype(np.int64)
    order = rng.permutation(pairs.shape[1])
    valid_idx, test_idx = order[:5], order[5:10]
    train = np.delete(pairs, np.concatenate([valid_idx, test_idx]), axis=1)
    return Interactions(
        name="tiny", source="test", n_users=N_USERS, n_items=N_ITEMS, train=train,
        valid=pairs[:, valid_idx], test=pairs[:, test_idx],
        image_feat=rng.standard_normal((N_ITEMS, 16)).astype(np.float32) if features else None,
        text_feat=rng.standard_normal((N_ITEMS, 8)).astype(np.float32) if features else None,
        fingerprint=f"tiny-{seed}-{features}",
        cache_dir=None if tmp_path is None else tmp_path / "cache",
    )


CFG = GraphConfig(user_knn_k=6, item_knn_k=4, seed=3)


def _co_edge_count(dense_train: np.ndarray, n_co: int) -> int:
    """Edges of a co-occurrence graph: min(m, n_co) per node with m neighbours, else n_co."""
    c = dense_train @ dense_train.T
    np.fill_diagonal(c, 0)
    total = 0
    for i in range(c.shape[0]):
        m = int((c[i] > 0).sum())
        total += min(m, n_co) if m else min(n_co, c.shape[0])
    return total


def test_edge_counts_match_reference():
    data = _data()
    timings: dict[str, float] = {}
    g = build_graph(data, CFG, timings=timings)
    assert set(g.canonical_etypes) == set(S.ALL_RELATIONS)
    assert g.num_nodes(S.USER) == N_USERS and g.num_nodes(S.ITEM) == N_ITEMS
    r = data.train_csr.toarray()
    n_train = data.train.shape[1]
    want = {
        S.INTERACTS: n_train, S.INTERACTED_BY: n_train,
        S.USER_CO: _co_edge_count(r, 6), S.ITEM_CO: _co_edge_count(r.T, 4),
        S.USER_INTEREST_IMAGE: N_USERS * 6, S.USER_INTEREST_TEXT: N_USERS * 6,
        S.ITEM_SEMANTIC_IMAGE: N_ITEMS * 4, S.ITEM_SEMANTIC_TEXT: N_ITEMS * 4,
    }
    for et, n in want.items():
        assert g.num_edges(et) == n, et
        assert g.edges[et].data[S.WEIGHT].dtype == torch.float32
    assert {et[1] for et in S.ALL_RELATIONS} <= set(timings)
    # Co-occurrence rows sum to 1; kNN keeps self with weight 1/k.
    for et, k in ((S.USER_CO, None), (S.ITEM_CO, None), (S.ITEM_SEMANTIC_TEXT, 4)):
        src, dst = g.edges(etype=et)
        w = g.edges[et].data[S.WEIGHT].double()
        sums = torch.zeros(g.num_nodes(et[2]), dtype=torch.float64).index_add(0, dst, w)
        if k is None:
            torch.testing.assert_close(sums, torch.ones_like(sums))
        else:
            self_w = w[src == dst]
            assert len(self_w) == g.num_nodes(et[2])
            torch.testing.assert_close(self_w, torch.full_like(self_w, 1 / k), atol=1e-6, rtol=0)


def test_interaction_weights_are_symmetric_normalisation():
    data = _data()
    g = build_graph(data, CFG)
    n = N_USERS + N_ITEMS
    a = np.zeros((n, n))
    for u, i in data.train.T:
        a[u, N_USERS + i] = a[N_USERS + i, u] = 1
    d = a.sum(1) + 1e-7
    a_hat = a / np.sqrt(d)[:, None] / np.sqrt(d)[None, :]
    src, dst = g.edges(etype=S.INTERACTS)  # user -> item
    np.testing.assert_allclose(g.edges[S.INTERACTS].data[S.WEIGHT].numpy(),
                               a_hat[N_USERS + dst.numpy(), src.numpy()], rtol=1e-6)
    src, dst = g.edges(etype=S.INTERACTED_BY)  # item -> user
    np.testing.assert_allclose(g.edges[S.INTERACTED_BY].data[S.WEIGHT].numpy(),
                               a_hat[dst.numpy(), N_USERS + src.numpy()], rtol=1e-6)


def test_user_fallback_uses_known_degree():
    data = _data()
    g = build_graph(data, dataclasses.replace(CFG, co_weight_mode="mean"))
    r = data.train_csr.toarray()
    c = r @ r.T
    np.fill_diagonal(c, 0)
    cold = [u for u in range(N_USERS) if not c[u].any()]
    assert cold, "the test data needs a user without co-occurring users"
    known = np.diff(data.known_csr.indptr)
    src, dst = g.edges(etype=S.USER_CO)
    for u in cold:
        got = sorted(src[dst == u].tolist())
        assert np.sort(known[got]).tolist() == np.sort(known)[::-1][:6][::-1].tolist()


def test_no_features_gives_empty_knn_relations_and_stats():
    data = _data(features=False)
    g = build_graph(data, CFG)
    for et in (S.USER_INTEREST_IMAGE, S.USER_INTEREST_TEXT, S.ITEM_SEMANTIC_IMAGE,
               S.ITEM_SEMANTIC_TEXT):
        assert g.num_edges(et) == 0
    stats = graph_stats(g)
    assert stats["nodes"] == {S.USER: N_USERS, S.ITEM: N_ITEMS}
    assert stats["relations"]["interest_image"]["edges"] == 0
    assert stats["relations"]["interest_image"]["in_degree_max"] == 0
    assert stats["cold_items"] == int((data.item_degree == 0).sum()) >= 1
    assert stats["cold_users"] == int((data.user_degree == 0).sum())
    co = stats["relations"]["co_user"]
    assert co["in_degree_max"] == 6 and co["edges"] == g.num_edges(S.USER_CO)


def test_same_seed_same_graph():
    a, b = build_graph(_data(), CFG), build_graph(_data(), CFG)
    for et in S.ALL_RELATIONS:
        assert all(torch.equal(x, y) for x, y in zip(a.edges(etype=et), b.edges(etype=et)))
        assert torch.equal(a.edges[et].data[S.WEIGHT], b.edges[et].data[S.WEIGHT])


def _count_builds(monkeypatch):
    calls = []
    real = graph_cache.build_graph

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(graph_cache, "build_graph", counting)
    return calls


def test_cache_hit_miss_and_corrupt_rebuild(tmp_path, monkeypatch):
    calls = _count_builds(monkeypatch)
    data, messages = _data(tmp_path), []
    g1 = load_or_build_graph(data, CFG, log=messages.append)
    path = graph_cache.cache_path(data, CFG)
    assert path.exists() and path.with_suffix(".json").exists() and len(calls) == 1
    g2 = load_or_build_graph(data, CFG, log=messages.append)
    assert len(calls) == 1 and "loaded from cache" in messages[-1]
    for et in S.ALL_RELATIONS:
        assert torch.equal(g1.edges[et].data[S.WEIGHT], g2.edges[et].data[S.WEIGHT])

    # Changed settings or data content: a different key, so a miss.
    load_or_build_graph(data, dataclasses.replace(CFG, item_knn_k=5), log=messages.append)
    load_or_build_graph(dataclasses.replace(data, fingerprint="other"), CFG, log=messages.append)
    assert len(calls) == 3

    path.write_bytes(b"not a graph")
    g3 = load_or_build_graph(data, CFG, log=messages.append)
    assert len(calls) == 4 and any("truncated" in m for m in messages)
    assert g3.num_edges() == g1.num_edges()
    load_or_build_graph(data, CFG, log=messages.append)
    assert len(calls) == 4  # the rebuilt file is good


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    data = _data(tmp_path)

    def broken_save(filename, graphs):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(graph_cache.dgl, "save_graphs", broken_save)
    with pytest.raises(RuntimeError, match="killed"):
        load_or_build_graph(data, CFG, log=lambda m: None)
    folder = tmp_path / "cache" / "graphs"
    assert not folder.exists() or [n for n in os.listdir(folder) if not n.endswith(".lock")] == []


def test_no_cache_folder_still_builds():
    messages = []
    g = load_or_build_graph(_data(None), CFG, log=messages.append)
    assert g.num_edges(S.INTERACTS) > 0 and "without caching" in messages[0]


def test_build_reports_each_relation_as_it_finishes(tmp_path):
    messages = []
    load_or_build_graph(_data(tmp_path), CFG, log=messages.append)
    done = [m for m in messages if m.startswith("graph: ") and m.endswith("s")
            and "(" in m and "cached at" not in m]
    names = [m.split()[1] for m in done]
    assert names == ["interacts", "co_user", "co_item", "semantic_image", "interest_image",
                     "semantic_text", "interest_text", "assemble"]
    assert "co_user (user co-occurrence, top 6)" in done[1]


def _garbage_of_the_same_size(path):
    size = path.stat().st_size
    path.write_bytes((b"garbage!" * (size // 8 + 1))[:size])


def test_a_damaged_cache_is_rebuilt_with_one_line_not_a_cpp_trace(tmp_path, monkeypatch):
    calls = _count_builds(monkeypatch)
    data, messages = _data(tmp_path), []
    load_or_build_graph(data, CFG, log=messages.append)
    path = graph_cache.cache_path(data, CFG)
    _garbage_of_the_same_size(path)  # passes the size check; DGL itself refuses it
    messages.clear()
    load_or_build_graph(data, CFG, log=messages.append)
    (why,) = [m for m in messages if "cannot be used" in m]
    assert str(path) in why and "DGLError" in why and "rebuilding it" in why
    assert "\n" not in why and "Stack trace" not in why and "[bt]" not in why
    assert len(calls) == 2


def test_a_cache_of_another_dataset_is_rebuilt(tmp_path, monkeypatch):
    calls = _count_builds(monkeypatch)
    other, data = _data(tmp_path), dataclasses.replace(
        _data(tmp_path, seed=1), n_users=N_USERS + 5, fingerprint="another")
    load_or_build_graph(other, CFG, log=lambda m: None)
    src, dst = graph_cache.cache_path(other, CFG), graph_cache.cache_path(data, CFG)
    dst.write_bytes(src.read_bytes())  # a valid file, under the other dataset's key
    messages = []
    graph = load_or_build_graph(data, CFG, log=messages.append)
    assert graph.num_nodes(S.USER) == N_USERS + 5 and len(calls) == 2
    assert any(f"{N_USERS} users" in m and "another dataset" in m for m in messages)


def test_orphan_temporary_files_are_removed_at_the_next_start(tmp_path):
    data = _data(tmp_path)
    folder = tmp_path / "cache" / "graphs"
    folder.mkdir(parents=True)
    key = graph_cache.cache_key(data, CFG)
    orphans = [folder / f".{key}.bin.abc123.bin.tmp", folder / ".deadbeef.json.x1.json.tmp"]
    busy = folder / ".cafe.bin.x2.bin.tmp"  # a build that another process is writing
    for p in (*orphans, busy):
        p.write_bytes(b"partial")
    from filelock import FileLock

    with FileLock(folder / "cafe.lock"):
        # Another thread's lock object counts as another holder (flock per open file).
        load_or_build_graph(data, CFG, log=lambda m: None)
    assert not any(p.exists() for p in orphans)
    assert busy.exists()
    load_or_build_graph(data, CFG, log=lambda m: None)
    assert not busy.exists()
