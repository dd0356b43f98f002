"""MGCN against the equations of the baselines spec (section 5), worked out densely."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_models_behaviour import planted_graph, seeded_build

from rearm_dgl.models.lightgcn import LightGCN
from rearm_dgl.models.mgcn import MGCN, MGCNConfig
from rearm_dgl.sampling import BPRSampler

CPU = torch.device("cpu")
K = 5


@pytest.fixture(scope="module")
def planted():
    return planted_graph(seed=13, item_knn_k=K)


def mgcn(planted, **kw) -> MGCN:
    return seeded_build(MGCN, MGCNConfig(**kw), planted)


def dense_knn(feat: np.ndarray) -> torch.Tensor:
    """Cosine kNN (k = K, self included, row i keeps j), normalised by the row sums."""
    x = torch.from_numpy(feat).double()
    x = x / x.norm(dim=1, keepdim=True)
    sim = x @ x.T
    s = torch.zeros_like(sim)
    for i in range(len(sim)):
        keep = torch.argsort(sim[i], descending=True)[:K]
        s[i, keep] = sim[i, keep]
    d = s.sum(1).pow(-0.5)
    return (d[:, None] * s * d[None, :]).float()


def dense_r_hat(data) -> torch.Tensor:
    r = torch.zeros(data.n_users, data.n_items)
    r[data.train[0], data.train[1]] = 1.0
    du, di = r.sum(1).pow(-0.5), r.sum(0).pow(-0.5)
    du[torch.isinf(du)] = 0
    di[torch.isinf(di)] = 0
    return du[:, None] * r * di[None, :]


def test_purified_features_follow_the_gating_formula(planted):
    data, _ = planted
    model = mgcn(planted)
    e_v, e_t = model.purified()
    with torch.no_grad():
        x_v = torch.from_numpy(data.image_feat)
        p_v = x_v @ model.image_proj.weight.T + model.image_proj.bias
        gate = 1 / (1 + torch.exp(-(p_v @ model.image_gate.weight.T + model.image_gate.bias)))
    torch.testing.assert_close(e_v, model.item_emb * gate)
    assert not torch.allclose(e_v, e_t)


def test_views_match_dense_equations(planted):
    data, _ = planted
    model = mgcn(planted, n_layers=2)
    with torch.no_grad():
        content, side = model.views()
        r_hat = dense_r_hat(data)
        a = torch.zeros(data.n_users + data.n_items, data.n_users + data.n_items)
        a[: data.n_users, data.n_users:] = r_hat
        a[data.n_users:, : data.n_users] = r_hat.T
        e = torch.cat([model.user_emb, model.item_emb])
        c = (e + a @ e + a @ a @ e) / 3
        views = []
        for e_hat, feat in zip(model.purified(), (data.image_feat, data.text_feat)):
            s = dense_knn(feat)
            i_m = s @ s @ e_hat
            views.append(torch.cat([r_hat @ i_m, i_m]))
        q = torch.cat([model.query(v) for v in views], 1)
        alpha = torch.exp(q) / torch.exp(q).sum(1, keepdim=True)
        common = alpha[:, :1] * views[0] + alpha[:, 1:] * views[1]
        spec_v = torch.sigmoid(model.image_pref(c)) * (views[0] - common)
        spec_t = torch.sigmoid(model.text_pref(c)) * (views[1] - common)
        expected_side = (spec_v + spec_t + common) / 3
    torch.testing.assert_close(content, c, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(side, expected_side, atol=1e-5, rtol=1e-4)


def test_loss_terms_follow_the_spec(planted):
    data, _ = planted
    model = mgcn(planted, reg_weight=0.2, cl_loss=0.5, cl_tau=0.3)
    batch = next(iter(BPRSampler(data, "train_only", 32, 0).batches(0)))
    out = model.loss(batch)
    with torch.no_grad():
        content, side = model.views()
        final = content + side
        u = final[batch.users]
        p, n = final[data.n_users + batch.pos], final[data.n_users + batch.neg]
        bpr = -torch.log(torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()
        reg = 0.2 * 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / 32

        def nce(x, y):  # mean_b -log(exp(cos(x_b, y_b)/t) / sum_b' exp(cos(x_b, y_b')/t))
            cos = (x / x.norm(dim=1, keepdim=True)) @ (y / y.norm(dim=1, keepdim=True)).T
            e = torch.exp(cos / 0.3)
            return (-torch.log(torch.diagonal(e) / e.sum(1))).mean()

        items = data.n_users + batch.pos
        cl = 0.5 * (nce(side[items], content[items])
                    + nce(side[batch.users], content[batch.users]))
    torch.testing.assert_close(out.parts["bpr"], bpr, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.parts["reg"], reg, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(out.parts["cl"], cl, atol=1e-6, rtol=1e-5)


def test_closed_gates_reduce_mgcn_to_lightgcn(planted):
    """sigmoid(gate) = 0 empties both modality views, so side = 0 and MGCN is LightGCN."""
    data, graph = planted
    model = mgcn(planted, n_ui_layers=2)
    with torch.no_grad():
        for gate in (model.image_gate, model.text_gate):
            gate.weight.zero_()
            gate.bias.fill_(-1e4)
        users, items = model.embeddings()
        _, side = model.views()
    assert torch.equal(side, torch.zeros_like(side))
    light = LightGCN(graph, data.n_users, data.n_items, n_layers=2)
    with torch.no_grad():
        light.user_emb.copy_(model.user_emb)
        light.item_emb.copy_(model.item_emb)
        lu, li = light.embeddings()
    torch.testing.assert_close(users, lu)
    torch.testing.assert_close(items, li)


def test_learning_rate_decays_as_the_reference_schedule(planted):
    model = mgcn(planted)
    assert model.lr_scale(1) == 1.0
    assert model.lr_scale(101) == pytest.approx(0.96 ** 2)
