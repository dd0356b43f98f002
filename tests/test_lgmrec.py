"""LGMRec against its equations (spec baselines section 8), worked out densely in the test."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_baselines import a_batch, dense_norm_adj
from test_models_behaviour import planted_graph, seeded_build

from rearm_dgl.errors import ConfigError
from rearm_dgl.models import Batch
from rearm_dgl.models.lgmrec import TAU, LGMRec, LGMRecConfig, hypergraph_propagate
from rearm_dgl.models.lightgcn import LightGCN, LightGCNConfig

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def planted():
    return planted_graph(seed=7)


def model(planted, **kw) -> LGMRec:
    return seeded_build(LGMRec, LGMRecConfig(**kw), planted)


def dense_r(data) -> torch.Tensor:
    r = torch.zeros(data.n_users, data.n_items)
    for u, i in data.train.T:
        r[u, i] = 1.0
    return r


def reference(m: LGMRec, data, p: LGMRecConfig):
    """Final users/items and hyper outputs from the spec's equations, no noise, no dropout."""
    a = torch.from_numpy(dense_norm_adj(data)).float()
    r = dense_r(data)
    n_u = data.n_users
    e = torch.cat([m.user_emb, m.item_emb])
    layer, total = e, e
    for _ in range(p.n_ui_layers):
        layer = a @ layer
        total = total + layer
    c = total / (p.n_ui_layers + 1)
    local = c.clone()
    hyper = {}
    for name, x, w, q in (("v", data.image_feat, m.image_trs, m.image_hyper),
                          ("t", data.text_feat, m.text_trs, m.text_hyper)):
        x = torch.from_numpy(x)
        f_i = x @ w
        f_u = (r @ f_i) / (r.sum(1, keepdim=True) + 1e-7)  # mean over the user's items
        g = torch.cat([f_u, f_i])
        for _ in range(p.n_mm_layers):
            g = a @ g  # the last layer only
        local = local + g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        h_i = torch.softmax((x @ q) / TAU, 1)
        h_u = torch.softmax((r @ (x @ q)) / TAU, 1)  # user logits: a sum over its items
        xi = c[n_u:]
        for _ in range(p.n_hyper_layer):
            y = h_i.T @ xi
            xi, zu = h_i @ y, h_u @ y
        hyper[name] = (zu, xi)
    glob = torch.cat([hyper["v"][0] + hyper["t"][0], hyper["v"][1] + hyper["t"][1]])
    final = local + p.alpha * glob / glob.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return final[:n_u], final[n_u:], hyper


@pytest.mark.parametrize("layers", [(2, 2, 1), (1, 3, 2)])
def test_forward_matches_a_dense_reference(planted, layers):
    data, _ = planted
    n_ui, n_mm, n_hyper = layers
    p = LGMRecConfig(n_ui_layers=n_ui, n_mm_layers=n_mm, n_hyper_layer=n_hyper, hyper_num=3,
                     alpha=0.7, eval_gumbel="none")
    m = model(planted, **{f: getattr(p, f) for f in p.__dataclass_fields__})
    m.eval()
    with torch.no_grad():
        users, items, hyper = m.forward()
        ref_u, ref_i, ref_hyper = reference(m, data, p)
    torch.testing.assert_close(users, ref_u, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(items, ref_i, rtol=1e-4, atol=1e-5)
    for name in ("v", "t"):
        torch.testing.assert_close(hyper[name][0], ref_hyper[name][0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(hyper[name][1], ref_hyper[name][1], rtol=1e-4, atol=1e-5)


def test_hypergraph_propagation_on_a_hand_case():
    # 3 items, 2 users, 2 hyperedges; one layer: Y = H_i^T X, X' = H_i Y, Z = H_u Y.
    h_i = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    h_u = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    x = torch.tensor([[1.0], [2.0], [4.0]])
    z, xi = hypergraph_propagate(h_i, h_u, x, 1)
    # Y = [1 + 1, 1 + 4] = [2, 5]
    torch.testing.assert_close(xi, torch.tensor([[2.0], [3.5], [5.0]]))
    torch.testing.assert_close(z, torch.tensor([[2.0], [0.5 + 3.75]]))


def test_hcl_is_summed_over_all_candidates(planted):
    data, _ = planted
    m = model(planted, cl_weight=1.0, reg_weight=0.0)
    m.eval()
    batch = a_batch(data, n=16)
    with torch.no_grad():
        _, _, hyper = m.forward()
        hcl = m.hcl_loss(hyper, batch)
        doubled = Batch(batch.users.repeat(2), batch.pos.repeat(2), batch.neg.repeat(2))
        hcl2 = m.hcl_loss(hyper, doubled)
        (zv_u, zv_i), (zt_u, zt_i) = hyper["v"], hyper["t"]
        expected = 0.0
        for anchor, cand, idx in ((zv_u, zt_u, batch.users), (zv_i, zt_i, batch.pos)):
            sim = F.normalize(anchor[idx], dim=1) @ F.normalize(cand, dim=1).T / TAU  # all rows
            expected += (torch.logsumexp(sim, 1) - sim[torch.arange(len(idx)), idx]).sum()
    torch.testing.assert_close(hcl, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hcl2, 2 * hcl, rtol=1e-5, atol=1e-5)  # linear in B


def test_loss_parts(planted):
    data, _ = planted
    m = model(planted, cl_weight=1e-2, reg_weight=0.5, keep_rate=1.0)
    m.train()
    batch = a_batch(data, n=16)
    torch.manual_seed(3)
    out = m.loss(batch)
    torch.manual_seed(3)
    users, items, hyper = m.forward()
    u, pos, neg = users[batch.users], items[batch.pos], items[batch.neg]
    bpr = -F.logsigmoid((u * pos).sum(1) - (u * neg).sum(1)).mean()
    reg = 0.5 * (u.norm() + pos.norm() + neg.norm()) / 16
    torch.testing.assert_close(out.parts["bpr"], bpr.detach())
    torch.testing.assert_close(out.parts["reg"], reg.detach())
    torch.testing.assert_close(out.parts["hcl"], 1e-2 * m.hcl_loss(hyper, batch).detach())


def test_gumbel_noise_at_evaluation_follows_the_flag(planted):
    sample = model(planted, eval_gumbel="sample")
    plain = model(planted, eval_gumbel="none")
    sample.eval()
    plain.eval()
    with torch.no_grad():
        noisy = sample.embeddings()[0]
        # Noise is drawn when evaluating (the reference), from the checkpoint's own seed.
        assert not torch.allclose(noisy, plain.embeddings()[0])
        assert torch.equal(noisy, sample.embeddings()[0])
        assert torch.equal(plain.embeddings()[0], plain.embeddings()[0])
        torch.manual_seed(123)  # another global state: the copy's own seed would differ
        copy = LGMRec.build(LGMRecConfig(), *planted, CPU)
        copy.load_state_dict(sample.state_dict())
        copy.eval()
        assert torch.equal(copy.embeddings()[0], noisy)
        sample.train()
        assert not torch.equal(sample.embeddings()[0], sample.embeddings()[0])


def test_hyperedge_dropout_in_training_only(planted):
    m = model(planted, keep_rate=0.5, eval_gumbel="none")
    m.eval()
    assert not m.hyper_drop.training
    m.train()
    assert m.hyper_drop.training and m.hyper_drop.p == pytest.approx(0.5)


def test_reduces_to_lightgcn_without_modalities_and_global(planted):
    data, graph = planted
    m = model(planted, alpha=0.0, n_ui_layers=2)
    light = LightGCN.build(LightGCNConfig(n_layers=2), data, graph, CPU)
    with torch.no_grad():
        m.image_trs.zero_()  # zero modality features: rownorm(0) = 0
        m.text_trs.zero_()
        light.user_emb.copy_(m.user_emb)
        light.item_emb.copy_(m.item_emb)
        users, items = m.embeddings()
        l_u, l_i = light.embeddings()
    torch.testing.assert_close(users, l_u)
    torch.testing.assert_close(items, l_i)


def test_features_are_frozen(planted):
    names = dict(model(planted).named_parameters())
    assert "image_feat" not in names and "text_feat" not in names
    assert set(names) == {"user_emb", "item_emb", "image_trs", "text_trs", "image_hyper",
                          "text_hyper"}


def test_config_checks():
    with pytest.raises(ConfigError, match="lgmrec.keep_rate"):
        LGMRecConfig(keep_rate=0.0)
    with pytest.raises(ConfigError, match="lgmrec.eval_gumbel"):
        LGMRecConfig(eval_gumbel="hard")
