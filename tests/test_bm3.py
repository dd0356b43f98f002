"""BM3 against its equations (spec baselines section 6), worked out densely in the test."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_baselines import a_batch, dense_norm_adj
from test_models_behaviour import planted_graph, seeded_build

from rearm_dgl.errors import ConfigError
from rearm_dgl.models import Batch
from rearm_dgl.models.bm3 import BM3, BM3Config
from rearm_dgl.models.lightgcn import LightGCN, LightGCNConfig

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def planted():
    return planted_graph(seed=5)


def model(planted, **kw) -> BM3:
    return seeded_build(BM3, BM3Config(**kw), planted)


def reference_loss(m: BM3, data, batch: Batch, n_layers: int) -> torch.Tensor:
    """The spec's total with dropout 0 (targets = the online representations, detached)."""
    a = torch.from_numpy(dense_norm_adj(data)).float()
    e = torch.cat([m.user_emb, m.item_emb])
    layer, total = e, e
    for _ in range(n_layers):
        layer = a @ layer
        total = total + layer
    h = total / (n_layers + 1)
    h_u, h_i = h[:data.n_users], h[data.n_users:] + m.item_emb
    t, v = m.text_proj(m.text_table), m.image_proj(m.image_table)
    g = m.predictor
    u, i = batch.users, batch.pos

    def agree(x, y):
        return 1 - F.cosine_similarity(x, y.detach(), dim=-1).mean()

    ui = agree(g(h_u)[u], h_i[i]) + agree(g(h_i)[i], h_u[u])
    cl = agree(g(t)[i], h_i[i]) + agree(g(v)[i], h_i[i]) + agree(g(t)[i], t[i]) \
        + agree(g(v)[i], v[i])
    reg = (h_u.norm() + h_i.norm()) / data.n_items
    return ui + m.reg_weight * reg + m.cl_weight * cl


@pytest.mark.parametrize("n_layers", [1, 2])
def test_loss_and_gradients_match_the_equations(planted, n_layers):
    data, _ = planted
    m = model(planted, n_layers=n_layers, dropout=0.0, reg_weight=0.1, cl_weight=2.0)
    batch = a_batch(data, n=48)
    out = m.loss(batch)
    out.total.backward()
    got = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    expected = reference_loss(m, data, batch, n_layers)
    expected.backward()
    torch.testing.assert_close(out.total, expected, rtol=1e-5, atol=1e-6)
    # The targets get no gradient: a model that let gradients through them would differ.
    for name, p in m.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=1e-7, msg=name)


def test_loss_has_no_negative_term(planted):
    data, _ = planted
    m = model(planted, dropout=0.3)
    batch = a_batch(data, n=48)
    other = Batch(batch.users, batch.pos, torch.full_like(batch.neg, 3))
    torch.manual_seed(1)
    a = m.loss(batch).total
    torch.manual_seed(1)
    b = m.loss(other).total
    assert torch.equal(a, b)


def test_target_dropout_masks_are_fresh_every_batch_and_drop_p(planted):
    data, _ = planted
    m = model(planted, dropout=0.3)
    m.eval()  # the target dropout stays on in eval mode: it belongs to the loss
    batch = a_batch(data, n=48)
    assert m.loss(batch).total != m.loss(batch).total
    mask = m._mask(20000, m.user_emb)
    assert mask.shape == (20000, m.user_emb.shape[1])
    assert torch.unique(mask).tolist() == pytest.approx([0.0, 1 / 0.7])
    assert abs(float((mask == 0).float().mean()) - 0.3) < 0.01


def test_repeated_item_shares_its_target_mask(planted):
    data, _ = planted
    m = model(planted, dropout=0.5, cl_weight=0.0, reg_weight=0.0)
    # One pair repeated: shared masks give identical per-row terms, so the mean over the
    # batch equals the single-pair loss drawn with the same generator state.
    pair = Batch(torch.tensor([3]), torch.tensor([5]), torch.tensor([0]))
    twice = Batch(torch.tensor([3, 3]), torch.tensor([5, 5]), torch.tensor([0, 0]))
    torch.manual_seed(4)
    one = m.loss(pair).total
    torch.manual_seed(4)
    two = m.loss(twice).total
    torch.testing.assert_close(one, two)


def test_score_ignores_the_features(planted):
    m = model(planted)
    m.eval()
    with torch.no_grad():
        before = m.embeddings()
        m.text_table.mul_(-3.0)
        m.image_table.add_(1.0)
        after = m.embeddings()
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


def test_feature_tables_train_only_when_asked(planted):
    assert model(planted).text_table.requires_grad
    frozen = model(planted, train_features=False)
    assert not frozen.text_table.requires_grad and not frozen.image_table.requires_grad
    assert not {"text_table", "image_table"} & set(dict(frozen.named_parameters()))


def test_reduces_to_lightgcn_plus_the_item_layer_zero(planted):
    data, graph = planted
    m = model(planted, n_layers=2)
    light = LightGCN.build(LightGCNConfig(n_layers=2), data, graph, CPU)
    with torch.no_grad():
        light.user_emb.copy_(m.user_emb)
        light.item_emb.copy_(m.item_emb)
        h_u, h_i = m.propagate()
        l_u, l_i = light.embeddings()
    torch.testing.assert_close(h_u, l_u)
    torch.testing.assert_close(h_i, l_i + m.item_emb)


def test_config_rejects_bad_dropout():
    with pytest.raises(ConfigError, match="bm3.dropout"):
        BM3Config(dropout=1.0)
    assert dataclasses.replace(BM3Config(), dropout=0.3).dropout == 0.3
    assert np.isclose(BM3Config().cl_weight, 2.0)
