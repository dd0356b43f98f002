"""Operators derived from the heterograph, and the differentiable block top-k kNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_models_behaviour import planted_data

from rearm_dgl.config import GraphConfig
from rearm_dgl.graphs import Propagation
from rearm_dgl.graphs import schema as S
from rearm_dgl.graphs.build import build_graph
from rearm_dgl.graphs.derived import knn_values, rowsum_sym_norm, rw_self_loop_graph
from rearm_dgl.graphs.knn import knn_graph_differentiable

K = 5


@pytest.fixture(scope="module")
def planted():
    data = planted_data(seed=5)
    return data, build_graph(data, GraphConfig(user_knn_k=8, item_knn_k=K, seed=0))


def dense(rows, cols, values, n) -> np.ndarray:
    out = np.zeros((n, n))
    np.add.at(out, (np.asarray(rows), np.asarray(cols)), np.asarray(values, dtype=np.float64))
    return out


def brute_knn(feat: np.ndarray, k: int) -> np.ndarray:
    """(n, n) with row i holding cos(i, j) at its k most similar j, zero elsewhere."""
    x = feat / np.linalg.norm(feat, axis=1, keepdims=True)
    cos = x @ x.T
    out = np.zeros_like(cos)
    for i in range(len(cos)):
        keep = np.argsort(-cos[i])[:k]
        out[i, keep] = cos[i, keep]
    return out


@pytest.mark.parametrize("etype, feat", [(S.ITEM_SEMANTIC_IMAGE, "image_feat"),
                                         (S.ITEM_SEMANTIC_TEXT, "text_feat")])
def test_cosine_knn_is_rowsum_normalised_cosine(planted, etype, feat):
    data, graph = planted
    rows, cols, values = knn_values(graph, etype, "cosine")
    got = dense(rows, cols, values, data.n_items)
    c = brute_knn(getattr(data, feat).astype(np.float64), K)
    r = c.sum(1)
    np.testing.assert_allclose(got, c / np.sqrt(np.outer(r, r)), atol=1e-6)


def test_binary_knn_puts_one_over_k_everywhere(planted):
    data, graph = planted
    rows, cols, values = knn_values(graph, S.ITEM_SEMANTIC_TEXT, "binary")
    np.testing.assert_allclose(values.numpy(), 1.0 / K, rtol=1e-6)
    assert np.all(np.bincount(rows.numpy(), minlength=data.n_items) == K)
    with pytest.raises(ValueError, match="binary"):
        knn_values(graph, S.ITEM_SEMANTIC_TEXT, "ones")


def test_rowsum_norm_gives_zero_rows_where_the_sum_is_not_positive():
    rows, cols = torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 1, 1, 0, 2])
    values = torch.tensor([1.0, 0.5, 0.3, -0.3, 2.0])  # row 1 sums to 0
    out = rowsum_sym_norm(rows, cols, values, 3)
    assert torch.isfinite(out).all()
    assert out[2].item() == 0.0 and out[3].item() == 0.0 and out[1].item() == 0.0
    torch.testing.assert_close(out[0], torch.tensor(1.0 / 1.5))
    torch.testing.assert_close(out[4], torch.tensor(1.0))


def test_random_walk_with_self_loops_matches_dense_and_keeps_cold_nodes():
    users = torch.tensor([0, 0, 1, 2])
    items = torch.tensor([0, 1, 1, 2])
    n_users, n_items = 4, 4  # user 3 and item 3 have no interaction
    op = Propagation(rw_self_loop_graph(users, items, n_users, n_items),
                     [(S.INTERACTS, 1.0), (S.INTERACTED_BY, 1.0), (S.USER_SELF, 1.0),
                      (S.ITEM_SELF, 1.0)])
    a = np.eye(n_users + n_items)
    for u, i in zip(users.tolist(), items.tolist()):
        a[u, n_users + i] = a[n_users + i, u] = 1.0
    a_hat = a / a.sum(1, keepdims=True)  # (D + I)^-1 (A + I)
    x = torch.randn(n_users + n_items, 3)
    out = op({S.USER: x[:n_users], S.ITEM: x[n_users:]}, 2, "mean")
    expected = (x.double().numpy() + a_hat @ x.double().numpy()
                + a_hat @ a_hat @ x.double().numpy()) / 3
    np.testing.assert_allclose(torch.cat([out[S.USER], out[S.ITEM]]).numpy(), expected,
                               atol=1e-6)
    np.testing.assert_allclose(a_hat.sum(1), 1.0)
    one = op({S.USER: x[:n_users], S.ITEM: x[n_users:]}, 1, "last")
    torch.testing.assert_close(one[S.USER][3], x[3])  # the cold user keeps itself


@pytest.mark.parametrize("block_rows", [None, 7])
def test_block_topk_matches_dense_values_and_gradients(block_rows):
    gen = torch.Generator().manual_seed(0)
    n, d, k = 30, 6, 4
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    weights = torch.randn(n, n, generator=gen, dtype=torch.float64)

    # Dense route: the full similarity matrix, top-k, scatter, as the reference builds it.
    x_dense = x.clone().requires_grad_()
    xn = x_dense / x_dense.norm(dim=1, keepdim=True)
    sim = xn @ xn.T
    top = torch.topk(sim, k, dim=1)
    s_dense = torch.zeros(n, n, dtype=torch.float64).scatter(1, top.indices, top.values)
    (s_dense * weights).sum().backward()

    x_block = x.clone().requires_grad_()
    rows, cols, values = knn_graph_differentiable(x_block, k, block_rows=block_rows)
    s_block = torch.zeros(n, n, dtype=torch.float64).index_put((rows, cols), values,
                                                               accumulate=True)
    (s_block * weights).sum().backward()

    torch.testing.assert_close(s_block.detach(), s_dense.detach())
    torch.testing.assert_close(x_block.grad, x_dense.grad)
    assert rows.numel() == n * k and torch.equal(rows, torch.arange(n).repeat_interleave(k))
    assert torch.all(cols.view(n, k)[:, 0] == torch.arange(n))  # self first: cos = 1


def test_block_topk_zero_row_has_zero_similarities():
    x = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    _, _, values = knn_graph_differentiable(x, 2)
    assert torch.isfinite(values).all()
    assert torch.all(values.view(3, 2)[1] == 0)
    assert F.normalize(x, dim=1)[1].abs().sum() == 0
