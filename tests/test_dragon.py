"""DRAGON against the equations of the baselines spec (sections B4 and 4), worked out densely."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from test_baselines import fit_uninterrupted_and_resumed
from test_models_behaviour import planted_data, planted_graph, seeded_build

from rearm_dgl.config import GraphConfig, build_config
from rearm_dgl.graphs.build import build_graph
from rearm_dgl.graphs.cooccurrence import cooccurrence_lists, urn_pad
from rearm_dgl.models.dragon import DRAGON, DRAGONConfig
from rearm_dgl.sampling import BPRSampler

CPU = torch.device("cpu")
K = 5


@pytest.fixture(scope="module")
def planted():
    return planted_graph(seed=11, item_knn_k=K)


def dragon(planted, **kw) -> DRAGON:
    return seeded_build(DRAGON, DRAGONConfig(**kw), planted)


def dense_op(op, n: int) -> torch.Tensor:
    """The matrix of a linear operator on (n, d) inputs, column by column."""
    return op(torch.eye(n)).T.T


def brute_counts(train: np.ndarray, n_users: int, n_items: int) -> np.ndarray:
    """c_uv = |I_u & I_v| for u != v, with Python sets."""
    items = [set() for _ in range(n_users)]
    for u, i in train.T:
        items[u].add(int(i))
    c = np.zeros((n_users, n_users))
    for u in range(n_users):
        for v in range(n_users):
            if u != v:
                c[u, v] = len(items[u] & items[v])
    return c


def sparse_data():
    """Users 0-3 share items (users 1 and 2 two of them); users 4 and 5 share nothing."""
    pairs = np.array([[0, 0], [0, 1], [1, 1], [1, 2], [1, 3], [2, 2], [2, 3], [3, 3],
                      [4, 4], [5, 5]]).T
    return sp.csr_matrix((np.ones(pairs.shape[1]), (pairs[0], pairs[1])), shape=(6, 6)), pairs


def test_cooccurrence_lists_match_brute_force_counts(planted):
    data, _ = planted
    n = 6
    neighbours, counts, m = cooccurrence_lists(data.train_csr, n, seed=0)
    c = brute_counts(data.train, data.n_users, data.n_items)
    for u in range(data.n_users):
        nonzero = np.flatnonzero(c[u])
        assert m[u] == min(n, nonzero.size)
        kept = neighbours[u, : m[u]]
        np.testing.assert_array_equal(counts[u, : m[u]], c[u, kept])  # the true counts
        # The kept counts are the largest ones, in descending order.
        np.testing.assert_array_equal(counts[u, : m[u]], np.sort(c[u])[::-1][: m[u]])
        assert u not in kept


def test_user_graph_pads_with_own_neighbours_and_leaves_isolated_users_empty():
    r, pairs = sparse_data()
    data = dataclasses.replace(planted_data(), n_users=6, n_items=6, train=pairs)
    assert data.train_csr.shape == (6, 6)
    neighbours, counts, m = cooccurrence_lists(r, 4, seed=0)
    np.testing.assert_array_equal(m, [1, 3, 2, 2, 0, 0])
    np.testing.assert_array_equal(counts[1, :3], [2, 1, 1])  # user 2 first: two shared items
    padded, padded_counts = urn_pad(neighbours, counts, m, np.random.default_rng(0))
    for u in range(4):
        assert set(padded[u]) == set(neighbours[u, : m[u]])
        np.testing.assert_array_equal(padded[u, : m[u]], neighbours[u, : m[u]])
    assert np.all(padded[0] == 1) and np.all(padded_counts[0] == 1)
    np.testing.assert_array_equal(padded[4:], 0)  # untouched: weights will be zero

    from rearm_dgl.models.dragon import user_graph_weights

    w = user_graph_weights(padded_counts, m)
    np.testing.assert_allclose(w[:4].sum(1), 1.0)
    assert np.all(w[4:] == 0)
    # Row 1: softmax over its padded list of counts; duplicates count once each.
    e = np.exp(padded_counts[1] - padded_counts[1].max())
    np.testing.assert_allclose(w[1], e / e.sum())


def test_padding_is_an_urn_not_iid_draws_from_the_original_list():
    """m = 2, n = 4: both pads equal the first neighbour with prob 1/2 * 2/3 = 1/3 (urn);
    sampling the original two uniformly would give 1/4."""
    rows = 20000
    neighbours = np.zeros((rows, 4), dtype=np.int64)
    neighbours[:, 1] = 1
    counts = np.ones((rows, 4))
    m = np.full(rows, 2)
    padded, _ = urn_pad(neighbours, counts, m, np.random.default_rng(0))
    # P(pads 0, 0) = P(first pad 0) P(second 0 | list 0, 1, 0) = 1/2 * 2/3.
    share = np.mean((padded[:, 2] == 0) & (padded[:, 3] == 0))
    assert abs(share - 1 / 3) < 0.015, share


def test_isolated_users_aggregate_nothing(planted):
    _, graph = planted
    r, pairs = sparse_data()
    data = dataclasses.replace(planted_data(), n_users=6, n_items=6, train=pairs,
                               valid=pairs[:, :1], test=pairs[:, 1:2],
                               image_feat=planted_data().image_feat[:6],
                               text_feat=planted_data().text_feat[:6])
    g = build_graph(data, GraphConfig(user_knn_k=2, item_knn_k=2, seed=0))
    torch.manual_seed(0)
    model = DRAGON.build(DRAGONConfig(n_user_neighbours=3), data, g, CPU)
    x = torch.randn(6, 4)
    out = model.user_graph(x)
    assert torch.equal(out[4:], torch.zeros(2, 4))
    torch.testing.assert_close(out[0], x[1])  # a single neighbour, padded with itself


def test_user_graph_is_redrawn_every_epoch_and_reproducible(planted):
    data, _ = planted
    _, _, m = cooccurrence_lists(data.train_csr, data.n_users)
    model = dragon(planted, n_user_neighbours=int(m.max()) + 5)  # every user is padded
    x = torch.randn(data.n_users, 3)
    model.start_epoch(1)
    a = model.user_graph(x)
    model.start_epoch(2)
    b = model.user_graph(x)
    model.start_epoch(1)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(model.user_graph(x), a)


def test_item_graph_is_a_weighted_mean_over_k_neighbours(planted):
    data, graph = planted
    model = dragon(planted, mm_image_weight=0.3)
    s = dense_op(lambda x: model.item_prop({"item": x}, 1, "last")["item"], data.n_items)
    np.testing.assert_allclose(s.sum(1).numpy(), 1.0, atol=1e-6)
    values = set(np.round(s[s > 0].numpy().astype(float), 6))
    assert values <= {round(v, 6) for v in (0.3 / K, 0.7 / K, 1.0 / K)}


def dense_sym_adj(data) -> torch.Tensor:
    n = data.n_users + data.n_items
    a = torch.zeros(n, n)
    for u, i in data.train.T:
        a[u, data.n_users + i] = a[data.n_users + i, u] = 1.0
    d = a.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0
    return d[:, None] * a * d[None, :]


def test_forward_matches_dense_equations(planted):
    data, _ = planted
    model = dragon(planted, mm_image_weight=0.2, eval_embeddings="recompute")
    model.eval()
    with torch.no_grad():
        users, items = model.embeddings()
        a = dense_sym_adj(data)
        hs = []
        for pref, mlp, feat in ((model.image_pref, model.image_mlp, data.image_feat),
                                (model.text_pref, model.text_mlp, data.text_feat)):
            z = F.normalize(torch.cat([pref, mlp(torch.from_numpy(feat))]), dim=1)
            hs.append(z + a @ z + a @ a @ z)
        u0 = torch.cat([model.modal_weight[:, :1] * hs[0][: data.n_users],
                        model.modal_weight[:, 1:] * hs[1][: data.n_users]], 1)
        i0 = torch.cat([hs[0][data.n_users:], hs[1][data.n_users:]], 1)
        s = dense_op(lambda x: model.item_prop({"item": x}, 1, "last")["item"], data.n_items)
        g = dense_op(model.user_graph, data.n_users)
    torch.testing.assert_close(items, i0 + s @ i0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(users, u0 + g @ u0, atol=1e-5, rtol=1e-5)


def test_loss_is_base2_bpr_plus_preference_and_weight_penalties(planted):
    data, _ = planted
    model = dragon(planted, reg_weight=0.5)
    batch = next(iter(BPRSampler(data, "train_only", 40, 0).batches(0)))
    out = model.loss(batch)
    with torch.no_grad():
        users, items = model.forward_all()
        u = users[batch.users]
        diff = (u * items[batch.pos]).sum(1) - (u * items[batch.neg]).sum(1)
        bpr = -torch.log2(torch.sigmoid(diff)).mean()
        reg = 0.5 * ((model.image_pref[batch.users] ** 2).mean()
                     + (model.text_pref[batch.users] ** 2).mean()
                     + (model.modal_weight ** 2).mean())
    torch.testing.assert_close(out.parts["bpr"], bpr, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.parts["reg"], reg, atol=1e-7, rtol=1e-5)
    np.testing.assert_allclose(model.modal_weight.detach().sum(1).numpy(), 1.0, rtol=1e-6)


def test_evaluation_scores_the_last_training_batch(planted):
    data, _ = planted
    model = dragon(planted)
    opt = model.configure_optimizer(0.05)
    batches = list(BPRSampler(data, "train_only", 100, 0).batches(0))
    model.train()
    for batch in batches:
        opt.zero_grad()
        out = model.loss(batch)
        with torch.no_grad():
            before = model.forward_all()
        out.total.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        cached = model.embeddings()
        fresh = model.forward_all()
    torch.testing.assert_close(cached[0], before[0])  # before the last optimiser step
    assert not torch.allclose(cached[0], fresh[0])
    state = model.state_dict()
    assert torch.equal(state["cached_users"], cached[0]) and bool(state["has_cache"])
    assert "image_feat" not in state  # the frozen features are not saved
    recompute = dragon(planted, eval_embeddings="recompute")
    recompute.load_state_dict(state)
    recompute.eval()
    with torch.no_grad():
        torch.testing.assert_close(recompute.embeddings()[0], fresh[0])


def test_without_homogeneous_neighbours_scores_are_the_modality_gcn():
    """n_mm_layers = 0 doubles i0, and no user shares an item: u = u0 (a reduction)."""
    pairs = np.array([[u, u] for u in range(8)] + [[u, u + 8] for u in range(8)]).T
    base = planted_data()
    data = dataclasses.replace(base, n_users=8, n_items=16, train=pairs,
                               valid=np.array([[0], [1]]), test=np.array([[1], [2]]),
                               image_feat=base.image_feat[:16], text_feat=base.text_feat[:16])
    g = build_graph(data, GraphConfig(user_knn_k=2, item_knn_k=2, seed=0))
    torch.manual_seed(0)
    model = DRAGON.build(DRAGONConfig(n_mm_layers=0, eval_embeddings="recompute"), data, g, CPU)
    model.eval()
    with torch.no_grad():
        users, items = model.embeddings()
        u0, i0 = model.modality_views()
    torch.testing.assert_close(users, u0)
    torch.testing.assert_close(items, 2 * i0)
    scores = users @ items.T
    a = model.modal_weight
    with torch.no_grad():
        a_hat = dense_sym_adj(data)
        expected = 0
        for m, (pref, mlp, feat) in enumerate(((model.image_pref, model.image_mlp, data.image_feat),
                                               (model.text_pref, model.text_mlp, data.text_feat))):
            z = F.normalize(torch.cat([pref, mlp(torch.from_numpy(feat))]), dim=1)
            h = z + a_hat @ z + a_hat @ a_hat @ z
            expected = expected + 2 * a[:, m:m + 1] * h[:8] @ h[8:].T
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


def test_resumed_run_matches_uninterrupted(planted, tmp_path):
    data, graph = planted
    cfg = build_config("dragon", "planted", overrides=[
        "train.epochs=3", "train.batch_size=128", "train.device=cpu", "eval.topk=[10]",
        "eval.metric=Recall@10", "dragon.n_user_neighbours=70"])
    full, resumed = fit_uninterrupted_and_resumed(cfg, data, graph, tmp_path)
    assert resumed.test == full.test
    assert math.isfinite(full.test["Recall@10"])


def test_trainer_calls_the_pre_epoch_hook_before_each_epoch(planted, tmp_path, monkeypatch):
    from rearm_dgl.train import fit

    data, graph = planted
    calls = []
    original = DRAGON.start_epoch

    def record(self, epoch):
        calls.append((epoch, self.training))
        original(self, epoch)

    monkeypatch.setattr(DRAGON, "start_epoch", record)
    cfg = build_config("dragon", "planted", overrides=[
        "train.epochs=2", "train.batch_size=256", "train.device=cpu", "eval.topk=[10]",
        "eval.metric=Recall@10"])
    fit(cfg, runs_dir=tmp_path, data=data, graph=graph, quiet=True)
    assert calls == [(1, True), (2, True)]
