"""Model-specific checks of the baselines against slow dense references."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_models_behaviour import planted_graph, seeded_build

from rearm_dgl.config import build_config
from rearm_dgl.errors import ConfigError, DataError
from rearm_dgl.graphs.schema import ITEM, ITEM_SEMANTIC_IMAGE, ITEM_SEMANTIC_TEXT
from rearm_dgl.models import Batch
from rearm_dgl.models.freedom import FREEDOM, FREEDOMConfig
from rearm_dgl.models.lightgcn import LightGCN, LightGCNConfig
from rearm_dgl.models.vbpr import VBPR, VBPRConfig
from rearm_dgl.sampling import BPRSampler

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def planted():
    return planted_graph(seed=3)


def dense_norm_adj(data) -> np.ndarray:
    """(U+I) x (U+I) symmetric-normalised bipartite adjacency, the slow way."""
    n = data.n_users + data.n_items
    a = np.zeros((n, n))
    for u, i in data.train.T:
        a[u, data.n_users + i] = a[data.n_users + i, u] = 1.0
    d = a.sum(1) + 1e-7
    return a / np.sqrt(np.outer(d, d))


def a_batch(data, n=64, seed=0) -> Batch:
    sampler = BPRSampler(data, "train_only", batch_size=n, seed=seed)
    return next(iter(sampler.batches(0)))


# ----------------------------------------------------------------------------- LightGCN


@pytest.mark.parametrize("layers", [0, 1, 3])
def test_lightgcn_propagation_matches_dense_reference(planted, layers):
    data, graph = planted
    torch.manual_seed(0)
    model = LightGCN.build(LightGCNConfig(n_layers=layers), data, graph, CPU)
    with torch.no_grad():
        users, items = model.embeddings()
    e = torch.cat([model.user_emb, model.item_emb]).detach().double().numpy()
    a = dense_norm_adj(data)
    layer, total = e, e.copy()
    for _ in range(layers):
        layer = a @ layer
        total += layer
    expected = total / (layers + 1)
    np.testing.assert_allclose(users.numpy(), expected[:data.n_users], atol=1e-5)
    np.testing.assert_allclose(items.numpy(), expected[data.n_users:], atol=1e-5)


def test_lightgcn_loss_uses_mmrec_scaled_ego_penalty(planted):
    data, graph = planted
    torch.manual_seed(0)
    model = LightGCN.build(LightGCNConfig(n_layers=2, reg_weight=0.5), data, graph, CPU)
    batch = a_batch(data)
    out = model.loss(batch)
    u, p, n = (model.user_emb[batch.users], model.item_emb[batch.pos],
               model.item_emb[batch.neg])
    expected = 0.5 * (u.norm() + p.norm() + n.norm()) / batch.users.numel()
    torch.testing.assert_close(out.parts["reg"], expected.detach())
    users, items = model.embeddings()
    diff = (users[batch.users] * (items[batch.pos] - items[batch.neg])).sum(-1)
    torch.testing.assert_close(out.parts["bpr"], -torch.log(torch.sigmoid(diff)).mean().detach())


# ----------------------------------------------------------------------------- FREEDOM


def freedom(planted, **kw) -> FREEDOM:
    return seeded_build(FREEDOM, FREEDOMConfig(**kw), planted)


def test_freedom_item_graph_reuses_knn_neighbours_with_its_own_weights(planted):
    data, graph = planted
    w = 0.3
    model = freedom(planted, mm_image_weight=w)
    x = torch.randn(data.n_items, 4)
    got = model.item_prop({ITEM: x}, 1, "last")[ITEM]
    dense = np.zeros((data.n_items, data.n_items))
    for etype, share in ((ITEM_SEMANTIC_IMAGE, w), (ITEM_SEMANTIC_TEXT, 1 - w)):
        src, dst = (t.numpy() for t in graph.edges(etype=etype))
        a = np.zeros_like(dense)
        a[dst, src] = 1.0  # row i: the item's kNN neighbours, as ones
        d = a.sum(1) + 1e-7
        dense += share * a / np.sqrt(np.outer(d, d))
    assert graph.num_edges(ITEM_SEMANTIC_IMAGE) == data.n_items * 5
    # Every row keeps k = 5 neighbours, so each kept entry is 1/k before mixing.
    np.testing.assert_allclose(got.numpy(), dense @ x.double().numpy(), atol=1e-5)


def test_freedom_pruning_keeps_the_expected_fraction(planted):
    data, _ = planted
    model = freedom(planted, dropout=0.8)
    n = data.train.shape[1]
    users, items = model.prune(0)
    assert users.numel() == int(n * (1 - 0.8))  # as the paper's code rounds it
    kept = set(zip(users.tolist(), items.tolist()))
    assert len(kept) == users.numel()  # sampled without replacement
    assert kept <= set(zip(data.train[0].tolist(), data.train[1].tolist()))
    again = model.prune(0)
    assert torch.equal(again[0], users) and torch.equal(again[1], items)
    other = model.prune(1)
    assert not (torch.equal(other[0], users) and torch.equal(other[1], items))


def test_freedom_pruning_is_degree_sensitive(planted):
    data, _ = planted
    model = freedom(planted, dropout=0.5)
    key = data.train[0] * data.n_items + data.train[1]
    counts = np.zeros(key.size)
    for epoch in range(300):
        u, i = model.prune(epoch)
        counts += np.isin(key, u.numpy() * data.n_items + i.numpy())
    deg_u = np.bincount(data.train[0], minlength=data.n_users)[data.train[0]]
    deg_i = np.bincount(data.train[1], minlength=data.n_items)[data.train[1]]
    weight = 1 / np.sqrt(deg_u * deg_i)
    low, high = weight <= np.quantile(weight, 0.25), weight >= np.quantile(weight, 0.75)
    # Edges between high-degree nodes (low weight) are pruned more often.
    assert counts[low].mean() < counts[high].mean()


def test_freedom_draws_one_pruned_graph_per_epoch(planted):
    data, _ = planted
    model = freedom(planted)
    sampler = BPRSampler(data, "train_only", batch_size=100, seed=0)
    for epoch in range(2):
        graphs = set()
        for batch in sampler.batches(epoch):
            model.loss(batch)
            graphs.add(id(model._pruned))
        assert len(graphs) == 1
        assert int(model.prune_epoch) == epoch + 1
    with torch.no_grad():
        model.embeddings()  # evaluation uses the full graph and draws nothing
    assert int(model.prune_epoch) == 2


def test_freedom_pruned_graph_is_renormalised(planted):
    data, _ = planted
    model = freedom(planted, dropout=0.5, n_mm_layers=0, n_ui_layers=1)
    model._resample()
    users, items = model.prune(0)
    r = np.zeros((data.n_users, data.n_items))
    r[users.numpy(), items.numpy()] = 1.0
    du, di = r.sum(1) + 1e-7, r.sum(0) + 1e-7
    r_hat = r / np.sqrt(np.outer(du, di))
    x_u, x_i = torch.randn(data.n_users, 3), torch.randn(data.n_items, 3)
    out = model._pruned({"user": x_u, "item": x_i}, 1, "last")
    np.testing.assert_allclose(out["user"].numpy(), r_hat @ x_i.double().numpy(), atol=1e-5)
    np.testing.assert_allclose(out["item"].numpy(), r_hat.T @ x_u.double().numpy(), atol=1e-5)


def test_freedom_config_checks():
    with pytest.raises(ConfigError, match="feat_embed_dim"):
        FREEDOMConfig(feat_embed_dim=32)
    with pytest.raises(ConfigError, match="freedom.dropout"):
        FREEDOMConfig(dropout=1.0)


# ----------------------------------------------------------------------------- VBPR


def test_vbpr_scores_depend_on_the_features(planted):
    data, graph = planted
    torch.manual_seed(0)
    model = VBPR.build(VBPRConfig(), data, graph, CPU)
    users, items = model.embeddings()
    assert users.shape == (data.n_users, 128) and items.shape == (data.n_items, 128)
    assert model.features.shape == (data.n_items, 8 + 16)  # text then image
    swapped = dataclasses.replace(data, image_feat=data.image_feat[::-1].copy())
    torch.manual_seed(0)
    other = VBPR.build(VBPRConfig(), swapped, graph, CPU)
    assert torch.equal(other.item_emb, model.item_emb)  # same seed, same ID factors
    assert not torch.allclose(other.embeddings()[1], items)
    model.loss(a_batch(data)).total.backward()
    assert model.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("cls", [VBPR, FREEDOM])
def test_feature_models_reject_data_without_features(planted, cls):
    data, graph = planted
    bare = dataclasses.replace(data, image_feat=None, text_feat=None)
    with pytest.raises(DataError, match="needs image and text features"):
        cls.build(cls.config_cls(), bare, graph, CPU)


def test_presets_follow_the_mmrec_protocol():
    for model in ("lightgcn", "vbpr", "freedom"):
        cfg = build_config(model, "baby")
        assert (cfg.train.lr, cfg.train.batch_size, cfg.train.patience) == (1e-3, 2048, 20)
        assert cfg.train.negatives == "train_only" and cfg.eval.metric == "Recall@20"
        assert cfg.params.embedding_size == 64
    assert build_config("freedom", "baby").graph.item_knn_k == 10


def fit_uninterrupted_and_resumed(cfg, data, graph, tmp_path):
    """Fit ``cfg`` straight through, and again stopped after epoch 2 then resumed.

    Returns the two results ``(full, resumed)``, from runs under ``tmp_path / "a"`` and
    ``tmp_path / "b"``.
    """
    from rearm_dgl.train import fit

    full = fit(cfg, runs_dir=tmp_path / "a", data=data, graph=graph, quiet=True)

    class Stop(Exception):
        pass

    def stop_at_2(epoch, _):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(cfg, run_dir=tmp_path / "b", data=data, graph=graph, callbacks=[stop_at_2],
            quiet=True)
    resumed = fit(resume=tmp_path / "b", data=data, graph=graph, quiet=True)
    return full, resumed


def test_freedom_resumed_run_matches_uninterrupted(planted, tmp_path):
    data, graph = planted
    cfg = build_config("freedom", "planted", overrides=[
        "train.epochs=3", "train.batch_size=128", "train.device=cpu", "eval.topk=[10]",
        "eval.metric=Recall@10"])
    full, resumed = fit_uninterrupted_and_resumed(cfg, data, graph, tmp_path)
    assert resumed.test == full.test
