"""Top-K metrics against a per-user loop on random data and against hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rearm_dgl.evaluation.metrics import (
    map_at_k,
    metric_names,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    topk_metrics,
    topk_metrics_numpy,
)


def reference(hits_row: list[bool], n_pos: int, k: int) -> dict[str, float]:
    """The textbook definitions for one user, written as plain loops."""
    top = hits_row[:k]
    n_hits = sum(top)
    dcg = sum(1.0 / math.log2(rank + 1) for rank, hit in enumerate(top, start=1) if hit)
    idcg = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(n_pos, k) + 1))
    ap, seen = 0.0, 0
    for rank, hit in enumerate(top, start=1):
        if hit:
            seen += 1
            ap += seen / rank
    return {
        f"Recall@{k}": n_hits / n_pos,
        f"Precision@{k}": n_hits / k,
        f"NDCG@{k}": dcg / idcg,
        f"MAP@{k}": ap / min(n_pos, k),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_metric_matches_the_per_user_loop(seed):
    rng = np.random.default_rng(seed)
    b, kmax, ks = 200, 20, [1, 5, 10, 20]
    hits = rng.random((b, kmax)) < rng.uniform(0.02, 0.6, size=(b, 1))  # varied hit rates
    n_pos = hits.sum(1) + rng.integers(0, 25, size=b)  # at least the hits found
    n_pos = np.maximum(n_pos, 1)
    got = topk_metrics(torch.from_numpy(hits), torch.from_numpy(n_pos), ks)
    assert list(got) == metric_names(ks)
    for values in got.values():
        assert values.shape == (b,) and values.dtype == torch.float64
    for u in range(b):
        for k in ks:
            for name, want in reference(hits[u].tolist(), int(n_pos[u]), k).items():
                assert got[name][u].item() == pytest.approx(want, abs=1e-12), (u, name)


def test_hand_worked_three_users():
    hits = torch.tensor([[1, 0, 1],   # user 0: hits at ranks 1 and 3, 2 held out
                         [0, 1, 0],   # user 1: hit at rank 2, 4 held out
                         [0, 0, 0]],  # user 2: no hit, 1 held out
                        dtype=torch.bool)
    n_pos = torch.tensor([2, 4, 1])
    got = {k: v.tolist() for k, v in topk_metrics(hits, n_pos, [1, 3]).items()}
    want = {
        "Recall@1": [0.5, 0.0, 0.0],           # 1/2, 0/4, 0/1
        "Recall@3": [1.0, 0.25, 0.0],          # 2/2, 1/4, 0/1
        "Precision@1": [1.0, 0.0, 0.0],        # 1/1
        "Precision@3": [2 / 3, 1 / 3, 0.0],    # 2/3, 1/3
        "NDCG@1": [1.0, 0.0, 0.0],             # 1/log2(2) over the ideal 1/log2(2)
        # user 0: (1/log2 2 + 1/log2 4) / (1/log2 2 + 1/log2 3) = 1.5 / 1.6309297535714575
        # user 1: (1/log2 3) / (1/log2 2 + 1/log2 3 + 1/log2 4) = 0.63092975 / 2.13092975
        "NDCG@3": [0.9197207891481876, 0.2960819109658652, 0.0],
        "MAP@1": [1.0, 0.0, 0.0],              # (1/1) / min(2, 1)
        # user 0: (1/1 + 2/3) / min(2, 3) = 5/6; user 1: (1/2) / min(4, 3) = 1/6
        "MAP@3": [5 / 6, 1 / 6, 0.0],
    }
    assert set(got) == set(want)
    for name, values in want.items():
        assert got[name] == pytest.approx(values, abs=1e-12), name


def test_hand_worked_more_held_out_than_k():
    # One user, 10 held out, hits at ranks 2 and 4 of the top 4.
    hits = torch.tensor([[0, 1, 0, 1]], dtype=torch.bool)
    got = topk_metrics(hits, torch.tensor([10]), [4])
    assert got["Recall@4"].item() == pytest.approx(0.2)      # 2/10
    assert got["Precision@4"].item() == pytest.approx(0.5)   # 2/4
    # (1/log2 3 + 1/log2 5) / (1 + 1/log2 3 + 1/log2 4 + 1/log2 5)
    #   = (0.63092975 + 0.43067656) / (1 + 0.63092975 + 0.5 + 0.43067656) = 1.06160631 / 2.56160631
    assert got["NDCG@4"].item() == pytest.approx(0.4144299250118475, abs=1e-12)
    # (1/2 + 2/4) / min(10, 4) = 1 / 4
    assert got["MAP@4"].item() == pytest.approx(0.25)


def test_single_metric_functions_agree_with_topk_metrics():
    rng = np.random.default_rng(5)
    hits = torch.from_numpy(rng.random((30, 10)) < 0.3)
    n_pos = hits.sum(1) + 1
    both = topk_metrics(hits, n_pos, [3, 10])
    for fn in (recall_at_k, precision_at_k, ndcg_at_k, map_at_k):
        for name, values in fn(hits, n_pos, [3, 10]).items():
            assert torch.equal(values, both[name])


def test_numpy_entry_point():
    hits = np.array([[True, False], [False, False]])
    got = topk_metrics_numpy(hits, np.array([1, 3]), [2])
    assert isinstance(got["Recall@2"], np.ndarray)
    np.testing.assert_allclose(got["Recall@2"], [1.0, 0.0])
    np.testing.assert_allclose(got["NDCG@2"], [1.0, 0.0])


def test_bad_inputs_are_rejected():
    hits = torch.zeros((2, 5), dtype=torch.bool)
    with pytest.raises(ValueError, match="held-out"):
        topk_metrics(hits, torch.tensor([1, 0]), [5])
    with pytest.raises(ValueError, match="cut-offs"):
        topk_metrics(hits, torch.tensor([1, 1]), [10])
    with pytest.raises(ValueError, match="n_pos"):
        topk_metrics(hits, torch.tensor([1, 1, 1]), [5])
