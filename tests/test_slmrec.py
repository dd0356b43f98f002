"""SLMRec (FAC) against its equations (spec baselines section 7), worked out in the test."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_baselines import a_batch, dense_norm_adj
from test_models_behaviour import planted_graph, seeded_build

from rearm_dgl.errors import ConfigError
from rearm_dgl.models import Batch
from rearm_dgl.models.base import info_nce
from rearm_dgl.models.lightgcn import LightGCN, LightGCNConfig
from rearm_dgl.models.slmrec import SLMRec, SLMRecConfig

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def planted():
    return planted_graph(seed=6)


def model(planted, **kw) -> SLMRec:
    return seeded_build(SLMRec, SLMRecConfig(**kw), planted)


def lgc(a: torch.Tensor, e: torch.Tensor, layers: int) -> torch.Tensor:
    layer, total = e, e
    for _ in range(layers):
        layer = a @ layer
        total = total + layer
    return total / (layers + 1)


def ce(logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -log softmax at the diagonal, written out."""
    return (torch.logsumexp(logits, 1) - logits.diagonal()).mean()


def test_loss_matches_the_equations(planted):
    data, _ = planted
    m = model(planted, temp=0.2, ssl_temp=0.5, ssl_alpha=0.3)
    a = torch.from_numpy(dense_norm_adj(data)).float()
    n_u = data.n_users
    x_v = torch.from_numpy(data.image_feat)
    x_t = torch.from_numpy(data.text_feat)
    f_v = m.image_dense(x_v / x_v.norm(dim=1, keepdim=True))  # row-normalised features
    f_t = m.text_dense(x_t / x_t.norm(dim=1, keepdim=True))
    g_id = lgc(a, torch.cat([m.user_emb, m.item_emb]), 3)
    g_v = lgc(a, torch.cat([m.user_emb, f_v]), 3)
    g_t = lgc(a, torch.cat([m.user_emb, f_t]), 3)
    u = m.user_fuse(torch.cat([g_id[:n_u], g_v[:n_u], g_t[:n_u]], 1))
    i = m.item_fuse(torch.cat([g_id[n_u:], g_v[n_u:], g_t[n_u:]], 1))

    batch = a_batch(data, n=32)
    ub, ib = batch.users, batch.pos
    cos = (u[ub] / u[ub].norm(dim=1, keepdim=True)) @ (i[ib] / i[ib].norm(dim=1, keepdim=True)).T
    main = ce(cos / 0.2)
    x = m.head_iv(g_id[n_u:][ib])
    y = m.head_v(g_v[n_u:][ib])
    z = m.head_t(g_t[n_u:][ib])
    x_t2 = m.head_ivat(m.head_iva(x))
    ssl = ce(x @ y.T / 0.5) + ce(x_t2 @ z.T / 0.5)  # raw dot products, no normalisation

    out = m.loss(batch)
    torch.testing.assert_close(out.parts["main"], main.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.parts["ssl"], (0.3 * ssl).detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.total, (main + 0.3 * ssl).detach(), rtol=1e-5, atol=1e-6)
    assert x_t2.shape == z.shape == (32, 32)  # the textual FAC heads end at d / 2


def test_sampled_negatives_are_ignored(planted):
    data, _ = planted
    m = model(planted)
    batch = a_batch(data, n=32)
    other = Batch(batch.users, batch.pos, torch.zeros_like(batch.neg))
    assert torch.equal(m.loss(batch).total, m.loss(other).total)


def test_in_batch_duplicates_count_as_negatives():
    # Two anchors with the same positive: the duplicate is a (false) negative in each row.
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert float(info_nce(a, b, 1.0)) == pytest.approx(float(torch.log(torch.tensor(2.0))))


def test_eval_uses_the_last_training_batch_vectors(planted):
    data, _ = planted
    m = model(planted)
    batch = a_batch(data, n=32)
    opt = m.configure_optimizer(0.05)
    m.train()
    with torch.no_grad():
        before_users, before_items = m._fused()[:2]
    out = m.loss(batch)
    opt.zero_grad()
    out.total.backward()
    opt.step()
    m.eval()
    with torch.no_grad():
        users, items = m.embeddings()
        fresh_users, fresh_items = m._fused()[:2]
    # The cache holds the forward of the last batch, i.e. the weights before its step.
    torch.testing.assert_close(users, before_users)
    torch.testing.assert_close(items, before_items)
    assert not torch.allclose(users, fresh_users)
    # The cache travels with the weights, so the best checkpoint scores as it validated.
    copy = model(planted)
    copy.load_state_dict(m.state_dict())
    copy.eval()
    with torch.no_grad():
        torch.testing.assert_close(copy.embeddings()[0], users)

    recompute = model(planted, eval_cached=False)
    recompute.load_state_dict(m.state_dict())
    recompute.eval()
    with torch.no_grad():
        torch.testing.assert_close(recompute.embeddings()[0], fresh_users)


def test_adam_carries_the_weight_decay(planted):
    opt = model(planted, weight_decay=1e-4).configure_optimizer(1e-3)
    assert isinstance(opt, torch.optim.Adam) and not isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["weight_decay"] == 1e-4


def test_id_branch_reduces_to_lightgcn(planted):
    data, graph = planted
    m = model(planted)
    light = LightGCN.build(LightGCNConfig(n_layers=3), data, graph, CPU)
    with torch.no_grad():
        light.user_emb.copy_(m.user_emb)
        light.item_emb.copy_(m.item_emb)
        g_u, g_i = m.branches()
        l_u, l_i = light.embeddings()
    torch.testing.assert_close(g_u[:, :64], l_u)
    torch.testing.assert_close(g_i[:, :64], l_i)
    # Every branch starts from the same user embeddings, so without items (no edges) they
    # would coincide; with edges the user columns differ by the item inputs only.
    assert not torch.allclose(g_u[:, 64:128], l_u)


def test_features_are_row_normalised_and_frozen(planted):
    m = model(planted)
    torch.testing.assert_close(m.image_feat.norm(dim=1), torch.ones(m.image_feat.shape[0]))
    assert "image_feat" not in dict(m.named_parameters())
    assert F.normalize(m.text_feat, dim=1).allclose(m.text_feat)


def test_config_checks():
    with pytest.raises(ConfigError, match="slmrec.ssl_temp"):
        SLMRecConfig(ssl_temp=0.0)
