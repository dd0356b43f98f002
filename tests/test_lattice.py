"""LATTICE against the equations of the baselines spec (section 3), worked out densely."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_models_behaviour import planted_graph, seeded_build

from rearm_dgl.config import build_config
from rearm_dgl.models.lattice import LATTICE, LATTICEConfig
from rearm_dgl.sampling import BPRSampler

CPU = torch.device("cpu")
K = 5


@pytest.fixture(scope="module")
def planted():
    return planted_graph(seed=7, item_knn_k=K)


def lattice(planted, **kw) -> LATTICE:
    return seeded_build(LATTICE, LATTICEConfig(**kw), planted)


def to_dense(entries, n) -> torch.Tensor:
    rows, cols, values = entries
    return torch.zeros(n, n, dtype=values.dtype).index_put((rows, cols), values,
                                                           accumulate=True)


def brute_topk(x: torch.Tensor, k: int) -> torch.Tensor:
    """Dense (n, n): row i keeps its k largest cosines (a per-row sort), zero elsewhere."""
    xn = x / x.norm(dim=1, keepdim=True)
    sim = xn @ xn.T
    out = torch.zeros_like(sim)
    for i in range(sim.shape[0]):
        keep = torch.argsort(sim[i].detach(), descending=True)[:k]
        out[i, keep] = sim[i, keep]
    return out


def norm(m: torch.Tensor) -> torch.Tensor:
    """D^-1/2 M D^-1/2 with D the row sums, written with dense diagonal matrices."""
    d = torch.diag(m.sum(1).pow(-0.5))
    return d @ m @ d


def dense_item_graph(model: LATTICE, data) -> torch.Tensor:
    w = torch.softmax(model.modal_weight, 0)
    learned = [brute_topk(proj(table), K) for table, proj in (
        (model.image_table, model.image_proj), (model.text_table, model.text_proj))]
    orig = [norm(brute_topk(torch.from_numpy(f).float(), K))
            for f in (data.image_feat, data.text_feat)]
    lam = model.lambda_coeff
    return ((1 - lam) * norm(w[0] * learned[0] + w[1] * learned[1])
            + lam * (w[0] * orig[0] + w[1] * orig[1]))


def dense_rw_adj(data) -> torch.Tensor:
    n = data.n_users + data.n_items
    a = torch.eye(n)
    for u, i in data.train.T:
        a[u, data.n_users + i] = a[data.n_users + i, u] = 1.0
    return a / a.sum(1, keepdim=True)


def test_item_graph_at_initialisation_matches_brute_force(planted):
    data, _ = planted
    model = lattice(planted, lambda_coeff=0.6)
    got = to_dense(model.item_graph(), data.n_items)
    expected = dense_item_graph(model, data)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # Gradients reach the graph learner through the kept values, as in the dense version.
    weights = torch.randn(data.n_items, data.n_items)
    (got * weights).sum().backward()
    grads = [p.grad.clone() for p in (model.image_proj.weight, model.text_table,
                                      model.modal_weight)]
    model.zero_grad()
    (dense_item_graph(model, data) * weights).sum().backward()
    for g, p in zip(grads, (model.image_proj.weight, model.text_table, model.modal_weight)):
        torch.testing.assert_close(g, p.grad, atol=1e-5, rtol=1e-4)


def test_forward_matches_dense_equations(planted):
    data, _ = planted
    model = lattice(planted, n_layers=2)
    model.eval()
    with torch.no_grad():
        users, items = model.embeddings()
        s = dense_item_graph(model, data)
        h = s @ s @ model.item_emb
        a = dense_rw_adj(data)
        e = torch.cat([model.user_emb, model.item_emb])
        lgc = (e + a @ e + a @ a @ e) / 3
    torch.testing.assert_close(users, lgc[: data.n_users], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(items, lgc[data.n_users:] + F.normalize(h, dim=1),
                               atol=1e-5, rtol=1e-5)


def test_loss_is_bpr_plus_half_squared_norms_of_final_embeddings(planted):
    data, _ = planted
    model = lattice(planted, reg_weight=0.3)
    batch = next(iter(BPRSampler(data, "train_only", 50, 0).batches(0)))
    out = model.loss(batch)
    model.eval()
    with torch.no_grad():
        users, items = model.embeddings()
    u, p, n = users[batch.users], items[batch.pos], items[batch.neg]
    bpr = -torch.log(torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()
    reg = 0.3 * 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / 50
    torch.testing.assert_close(out.parts["bpr"], bpr, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.parts["reg"], reg, atol=1e-6, rtol=1e-5)


def test_graph_is_learned_at_the_first_batch_of_each_epoch_only(planted):
    data, _ = planted
    model = lattice(planted)
    model.train()
    batches = list(BPRSampler(data, "train_only", 100, 0).batches(0))
    assert len(batches) >= 3
    learner = (model.image_proj.weight, model.text_table, model.modal_weight)
    seen = []
    for epoch in (1, 2):
        model.start_epoch(epoch)
        for batch in batches[:2]:
            model.zero_grad(set_to_none=True)
            model.loss(batch).total.backward()
            seen.append([p.grad is not None and bool(p.grad.abs().sum() > 0) for p in learner])
            assert model.item_emb.grad.abs().sum() > 0  # the ID embeddings learn every batch
    assert seen == [[True] * 3, [False] * 3, [True] * 3, [False] * 3]


def test_fixed_graph_only_when_lambda_is_one(planted):
    """lambda = 1: S is the softmax-weighted mix of the raw-feature graphs, nothing learned."""
    data, graph = planted
    model = lattice(planted, lambda_coeff=1.0)
    s = to_dense(model.item_graph(), data.n_items)
    orig = [norm(brute_topk(torch.from_numpy(f).float(), K))
            for f in (data.image_feat, data.text_feat)]
    torch.testing.assert_close(s, 0.5 * orig[0] + 0.5 * orig[1], atol=1e-5, rtol=1e-5)
    batch = next(iter(BPRSampler(data, "train_only", 100, 0).batches(0)))
    model.loss(batch).total.backward()
    assert model.image_proj.weight.grad is None or model.image_proj.weight.grad.abs().sum() == 0
    assert model.modal_weight.grad.abs().sum() > 0  # omega still weighs the fixed graphs


def test_frozen_features_stay_out_of_the_parameters_and_state(planted):
    model = lattice(planted, train_features=False)
    names = {n for n, _ in model.named_parameters()}
    assert "image_table" not in names and "text_table" not in names
    assert "image_table" not in model.state_dict()
    assert "image_table" in {n for n, _ in lattice(planted).named_parameters()}


def test_trainer_applies_the_learning_rate_schedule(planted, tmp_path):
    from rearm_dgl.train import fit

    data, graph = planted
    cfg = build_config("lattice", "planted", overrides=[
        "train.epochs=3", "train.batch_size=128", "train.device=cpu", "train.lr=0.01",
        "lattice.lr_decay=0.5", "lattice.lr_decay_epochs=2", "eval.topk=[10]",
        "eval.metric=Recall@10"])
    res = fit(cfg, runs_dir=tmp_path, data=data, graph=graph, quiet=True)
    lrs = [json.loads(line)["lr"] for line in
           (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(lrs, [0.01, 0.01 * 0.5 ** 0.5, 0.01 * 0.5])
    assert LATTICE.lr_scale(lattice(planted), 51) == pytest.approx(0.96)
