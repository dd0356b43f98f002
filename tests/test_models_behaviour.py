"""One behavioural suite that every registered model passes (REARM, BPR-MF, the baselines).

The data is a tiny planted dataset: 60 users and 40 items in two taste clusters. Users mostly
interact with their own cluster's items, and the items' image and text features reveal their
cluster, so both ID-only and feature-based models can find the signal. Each model is built
with its default config and trained a few epochs by a plain BPR loop (the trainer has its own
tests), then checked for shapes, a finite loss with its named parts, a decreasing loss,
better-than-random recommendations and seed determinism.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rearm_dgl.config import EvalConfig, GraphConfig
from rearm_dgl.data.dataset import Interactions
from rearm_dgl.evaluation import evaluate, model_scorer
from rearm_dgl.graphs.build import build_graph
from rearm_dgl.models import Batch, registry
from rearm_dgl.sampling import BPRSampler
from rearm_dgl.train import seed_everything

N_USERS, N_ITEMS, PER_USER = 60, 40, 10  # 8 train, 1 valid, 1 test per user
OWN_CLUSTER = 0.9  # share of a user's items drawn from its own cluster
LR = 1e-2
EPOCHS = 20  # one full batch per epoch: 20 optimiser steps


def planted_data(seed: int = 0) -> Interactions:
    """Two taste clusters, visible in the interactions and in small features."""
    rng = np.random.default_rng(seed)
    item_cluster = np.arange(N_ITEMS) % 2
    user_cluster = np.arange(N_USERS) % 2
    rows = {"train": [], "valid": [], "test": []}
    for u in range(N_USERS):
        own = np.flatnonzero(item_cluster == user_cluster[u])
        other = np.flatnonzero(item_cluster != user_cluster[u])
        n_other = rng.binomial(PER_USER, 1 - OWN_CLUSTER)
        items = np.concatenate([rng.choice(own, PER_USER - n_other, replace=False),
                                rng.choice(other, n_other, replace=False)])
        rng.shuffle(items)
        # Held-out items come from the user's own cluster, so the signal is testable.
        held = [i for i in items if item_cluster[i] == user_cluster[u]][:2]
        rest = [i for i in items if i not in held]
        rows["train"] += [(u, int(i)) for i in rest]
        rows["valid"].append((u, int(held[0])))
        rows["test"].append((u, int(held[1])))
    # Every item appears in training at least once (a user of its cluster gets it).
    seen = {i for _, i in rows["train"]}
    held_pairs = set(rows["valid"] + rows["test"])
    for i in range(N_ITEMS):
        if i not in seen:
            u = next(u for u in range(int(item_cluster[i]), N_USERS, 2)
                     if (u, i) not in held_pairs)
            rows["train"].append((u, i))
    split = {k: np.unique(np.asarray(v, dtype=np.int64), axis=0).T.copy() for k, v in rows.items()}
    centres_v, centres_t = rng.normal(size=(2, 16)), rng.normal(size=(2, 8))
    image = np.abs(centres_v[item_cluster] + 0.3 * rng.normal(size=(N_ITEMS, 16)))
    text = centres_t[item_cluster] + 0.3 * rng.normal(size=(N_ITEMS, 8))
    return Interactions(name="planted", source="builtin:planted", n_users=N_USERS,
                        n_items=N_ITEMS, train=split["train"], valid=split["valid"],
                        test=split["test"], image_feat=image.astype(np.float32),
                        text_feat=text.astype(np.float32))


def planted_graph(seed: int = 0, item_knn_k: int = 5) -> tuple[Interactions, object]:
    """The planted dataset drawn with ``seed`` and its heterograph (user kNN 8, seed 0)."""
    data = planted_data(seed)
    return data, build_graph(data, GraphConfig(user_knn_k=8, item_knn_k=item_knn_k, seed=0))


def seeded_build(cls, params, planted):
    """``cls.build(params, data, graph)`` on the CPU after ``torch.manual_seed(0)``.

    Every call with the same arguments gives the same initial weights.
    """
    data, graph = planted
    torch.manual_seed(0)
    return cls.build(params, data, graph, torch.device("cpu"))


@pytest.fixture(scope="module")
def planted():
    return planted_graph()


def build(name: str, planted, seed: int = 0):
    data, graph = planted
    cls = registry.get(name)
    seed_everything(seed)  # Python, NumPy and torch, as the trainer seeds them
    return cls.build(cls.config_cls(), data, graph, torch.device("cpu"))


def fixed_batch(data: Interactions) -> Batch:
    """Every training pair once, with one seeded negative each."""
    sampler = BPRSampler(data, "train_only", batch_size=data.train.shape[1], seed=0)
    return next(iter(sampler.batches(0)))


def train_epochs(model, data: Interactions, epochs: int, seed: int = 0) -> list[float]:
    sampler = BPRSampler(data, "train_only", batch_size=1024, seed=seed)
    opt = model.configure_optimizer(LR)
    losses = []
    model.train()
    for epoch in range(epochs):
        for batch in sampler.batches(epoch):
            out = model.loss(batch)
            opt.zero_grad()
            out.total.backward()
            opt.step()
            losses.append(float(out.total.detach()))
    return losses


_TRAINED: dict[str, tuple] = {}


def trained(name: str, planted):
    """``(model, per-step losses)`` after ``EPOCHS`` epochs, trained once per module run."""
    if name not in _TRAINED:
        model = build(name, planted)
        losses = train_epochs(model, planted[0], EPOCHS)
        _TRAINED[name] = (model, losses)
    return _TRAINED[name]


MODELS = registry.names()


def test_every_builtin_model_is_in_the_suite():
    assert {"mf", "lightgcn", "vbpr", "freedom", "bm3", "slmrec", "lgmrec"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_shapes(name, planted):
    data, _ = planted
    model = build(name, planted)
    model.eval()
    with torch.no_grad():
        users, items = model.embeddings()
        assert users.shape[0] == data.n_users and items.shape[0] == data.n_items
        assert users.shape[1] == items.shape[1] >= 1
        scores = model.score(torch.tensor([0, 5, 7]), users, items)
    assert scores.shape == (3, data.n_items)
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("name", MODELS)
def test_loss_is_finite_with_named_parts(name, planted):
    model = build(name, planted)
    model.train()
    out = model.loss(fixed_batch(planted[0]))
    assert out.total.dim() == 0 and torch.isfinite(out.total)
    assert tuple(out.parts) == tuple(model.loss_parts)
    # Every model names its ranking term; it is BPR except for BM3 (bootstrapped agreement,
    # "ui") and SLMRec (in-batch softmax, "main"), which have none.
    assert out.parts
    for part, value in out.parts.items():
        assert torch.isfinite(torch.as_tensor(value)), part
        assert not torch.as_tensor(value).requires_grad, part
    out.total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", MODELS)
def test_loss_decreases(name, planted):
    _, losses = trained(name, planted)
    # Each epoch is one full batch of every training pair (fresh negatives each epoch).
    assert np.mean(losses[-3:]) < losses[0], losses


@pytest.mark.parametrize("name", MODELS)
def test_recommendations_beat_random(name, planted):
    data, _ = planted
    model, _ = trained(name, planted)
    k = 10
    result = evaluate(model_scorer(model), data, "test", EvalConfig(topk=(k,), metric=f"Recall@{k}"), "cpu")
    # A random ranking finds the single held-out item in the top k with probability
    # k / (items left after masking the user's training items).
    n_train = np.bincount(data.train[0], minlength=data.n_users)[result.users]
    random_recall = float(np.mean(k / (data.n_items - n_train)))
    assert result.metrics[f"Recall@{k}"] > random_recall + 0.2, (
        result.metrics, random_recall)


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_model(name, planted):
    data, _ = planted

    def run(seed):
        model = build(name, planted, seed)
        seed_everything(seed)
        train_epochs(model, data, 2, seed)
        model.eval()
        with torch.no_grad():
            return model.embeddings()

    # Multi-threaded CPU kernels (e.g. the scatter-add behind an indexed parameter's
    # gradient) may sum in a different order from run to run and move the last float bits,
    # so bit-identity is checked on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b, c = run(0), run(0), run(1)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert (a[0] - c[0]).abs().max() > 1e-3
