"""Full-ranking protocol: masking, user selection, batching, scorers, per-user files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rearm_dgl.config import EvalConfig
from rearm_dgl.data.dataset import Interactions
from rearm_dgl.errors import DataError
from rearm_dgl.evaluation import (
    EvalResult,
    evaluate,
    load_per_user,
    metric_names,
    model_scorer,
    popularity_scorer,
    save_per_user,
)
from rearm_dgl.models.base import Recommender

CFG = EvalConfig(topk=(5, 10), batch_size=7, metric="Recall@10")


def make_data(n_users=40, n_items=60, seed=0, per_user=12, empty_valid=(3, 17)) -> Interactions:
    """Random disjoint splits; users in ``empty_valid`` get no validation rows."""
    rng = np.random.default_rng(seed)
    parts = {"train": [], "valid": [], "test": []}
    for u in range(n_users):
        items = rng.permutation(n_items)[:per_user]
        n_valid = 0 if u in empty_valid else int(rng.integers(1, 4))
        n_test = int(rng.integers(1, 4))
        chunks = {"valid": items[:n_valid], "test": items[n_valid:n_valid + n_test],
                  "train": items[n_valid + n_test:]}
        for name, its in chunks.items():
            parts[name].append(np.stack([np.full(its.size, u), its]))
    arrays = {k: np.concatenate(v, axis=1).astype(np.int64) for k, v in parts.items()}
    return Interactions(name="t", source="test-data", n_users=n_users, n_items=n_items, **arrays)


def table_scorer(table: torch.Tensor):
    return lambda users: table[users].clone()


def reference_eval(table: np.ndarray, data: Interactions, split: str, ks) -> dict:
    """Per-user loop: mask training items, sort, count hits, textbook metrics."""
    train = {}
    for u, i in data.train.T:
        train.setdefault(int(u), set()).add(int(i))
    held = {}
    for u, i in data.split(split).T:
        held.setdefault(int(u), set()).add(int(i))
    out = {}
    for u in sorted(held):
        order = [i for i in np.argsort(-table[u], kind="stable") if int(i) not in train.get(u, ())]
        row = {}
        for k in ks:
            top = order[:k]
            rel = [int(i) in held[u] for i in top]
            n = len(held[u])
            ap, seen = 0.0, 0
            for r, hit in enumerate(rel, start=1):
                if hit:
                    seen += 1
                    ap += seen / r
            dcg = sum(1 / math.log2(r + 1) for r, hit in enumerate(rel, start=1) if hit)
            idcg = sum(1 / math.log2(r + 1) for r in range(1, min(n, k) + 1))
            row.update({f"Recall@{k}": sum(rel) / n, f"Precision@{k}": sum(rel) / k,
                        f"NDCG@{k}": dcg / idcg, f"MAP@{k}": ap / min(n, k)})
        out[u] = row
    return out


@pytest.mark.parametrize("split", ["valid", "test"])
def test_matches_per_user_reference_and_aligns_users(split):
    data = make_data(seed=1)
    table = np.random.default_rng(2).standard_normal((data.n_users, data.n_items))
    table[data.train[0], data.train[1]] += 3.0  # training items would fill the top if unmasked
    res = evaluate(table_scorer(torch.from_numpy(table).float()), data, split, CFG)
    ref = reference_eval(table.astype(np.float32), data, split, CFG.topk)
    assert res.users.tolist() == sorted(ref)
    assert list(res.per_user) == metric_names(CFG.topk)
    for name, values in res.per_user.items():
        assert values.shape == res.users.shape
        want = np.array([ref[int(u)][name] for u in res.users])
        np.testing.assert_allclose(values, want, atol=1e-12, err_msg=name)
        assert res.metrics[name] == pytest.approx(want.mean())


def test_training_items_are_masked_even_when_scored_highest():
    data = make_data(seed=3)
    table = torch.zeros(data.n_users, data.n_items)
    table[data.train[0], data.train[1]] = 100.0   # training items first
    table[data.valid[0], data.valid[1]] = 50.0    # then the held-out ones
    res = evaluate(table_scorer(table), data, "valid", CFG)
    # Every held-out item is ranked right after the masked ones: a perfect ranking.
    n = np.diff(data.split_csr("valid").indptr)[res.users]
    np.testing.assert_allclose(res.per_user["Recall@10"], np.minimum(n, 10) / n)
    np.testing.assert_allclose(res.per_user["NDCG@10"], 1.0)
    np.testing.assert_allclose(res.per_user["MAP@5"], 1.0)


def test_users_without_held_out_rows_are_skipped():
    data = make_data(empty_valid=(0, 3, 17))
    res = evaluate(popularity_scorer(data), data, "valid", CFG)
    assert set(res.users.tolist()) == set(range(data.n_users)) - {0, 3, 17}
    assert np.all(np.diff(res.users) > 0)


def test_batch_size_does_not_change_results():
    data = make_data(seed=4)
    table = torch.randn(data.n_users, data.n_items, generator=torch.Generator().manual_seed(0))
    one = evaluate(table_scorer(table), data, "test", EvalConfig(topk=(5, 10), batch_size=1,
                                                                 metric="Recall@10"))
    many = evaluate(table_scorer(table), data, "test", EvalConfig(topk=(5, 10), batch_size=1000,
                                                                  metric="Recall@10"))
    np.testing.assert_array_equal(one.users, many.users)
    for name in one.per_user:
        np.testing.assert_array_equal(one.per_user[name], many.per_user[name])
    assert one.metrics == many.metrics


def test_popularity_scorer_ranks_by_training_degree():
    data = make_data(seed=5)
    scorer = popularity_scorer(data)
    scores = scorer(torch.tensor([0, 5, 9]))
    assert scores.shape == (3, data.n_items)
    expected = torch.from_numpy(data.item_degree).float()
    assert all(torch.equal(row, expected) for row in scores)
    # Same ranking as an explicit table of degrees (ties resolved the same way by topk).
    table = expected.expand(data.n_users, -1).contiguous()
    a = evaluate(scorer, data, "valid", CFG)
    b = evaluate(table_scorer(table), data, "valid", CFG)
    assert a.metrics == b.metrics


def test_scorer_returning_a_view_is_not_modified():
    data = make_data(seed=6)
    base = torch.randn(data.n_items)
    evaluate(lambda users: base.expand(users.numel(), -1), data, "valid", CFG, device=None)
    assert torch.isfinite(base).all()


def test_fewer_items_than_k():
    data = make_data(n_users=6, n_items=8, per_user=6, empty_valid=())
    res = evaluate(popularity_scorer(data), data, "valid", CFG)   # K = 10 > 8 items
    n = np.diff(data.split_csr("valid").indptr)[res.users]
    # With at most 6 unmasked items, every held-out item is in the top 10.
    np.testing.assert_allclose(res.per_user["Recall@10"], 1.0)
    np.testing.assert_allclose(res.per_user["Precision@10"], n / 10)


def test_empty_split_is_a_data_error():
    data = make_data(n_users=4, empty_valid=(0, 1, 2, 3))
    with pytest.raises(DataError, match="valid"):
        evaluate(popularity_scorer(data), data, "valid", CFG)


class _Tiny(Recommender):
    name = "tiny"

    def __init__(self, n_users, n_items):
        super().__init__()
        self.u = nn.Parameter(torch.randn(n_users, 4))
        self.i = nn.Parameter(torch.randn(n_items, 4))
        self.drop = nn.Dropout(0.9)
        self.modes: list[bool] = []

    def embeddings(self):
        self.modes.append(self.training)
        return self.drop(self.u), self.drop(self.i)


def test_model_scorer_uses_eval_mode_and_restores_training():
    torch.manual_seed(0)
    data = make_data(seed=7)
    model = _Tiny(data.n_users, data.n_items)
    model.train()
    scorer = model_scorer(model)
    assert model.modes == [False] and model.training
    users = torch.tensor([1, 2])
    scores = scorer(users)
    assert not scores.requires_grad
    torch.testing.assert_close(scores, model.u[users].detach() @ model.i.detach().T)
    res = evaluate(scorer, data, "valid", CFG)
    assert model.training and len(model.modes) == 1   # embeddings computed once
    assert 0.0 <= res.metrics["Recall@10"] <= 1.0


def test_per_user_npz_round_trip(tmp_path: Path):
    data = make_data(seed=8)
    res = evaluate(popularity_scorer(data), data, "test", CFG)
    path = tmp_path / "runs" / "per_user_test.npz"
    save_per_user(path, res)
    assert sorted(p.name for p in path.parent.iterdir()) == ["per_user_test.npz"]  # no temp left
    back = load_per_user(path)
    assert isinstance(back, EvalResult)
    np.testing.assert_array_equal(back.users, res.users)
    assert set(back.per_user) == set(res.per_user)
    for name in res.per_user:
        np.testing.assert_array_equal(back.per_user[name], res.per_user[name])
        assert back.metrics[name] == pytest.approx(res.metrics[name], abs=1e-15)


def test_loading_a_bad_per_user_file_is_a_data_error(tmp_path: Path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="x.npz"):
        load_per_user(bad)
    with pytest.raises(DataError, match="missing.npz"):
        load_per_user(tmp_path / "missing.npz")
