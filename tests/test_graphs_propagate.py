"""Propagation: the DGL and torch.sparse backends agree with a dense reference and each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rearm_dgl._dgl import dgl
from rearm_dgl.graphs import Propagation, propagate
from rearm_dgl.graphs import schema as S
from rearm_dgl.graphs.propagate import SparseOperator, _spmm

N_USERS, N_ITEMS = 7, 5


def _random_graph(seed: int = 0):
    """A small heterograph with every schema relation, random edges and weights."""
    rng = np.random.default_rng(seed)
    data = {}
    sizes = {S.USER: N_USERS, S.ITEM: N_ITEMS}
    for et in S.ALL_RELATIONS:
        n_src, n_dst = sizes[et[0]], sizes[et[2]]
        m = int(rng.integers(4, n_src * n_dst))
        flat = rng.choice(n_src * n_dst, size=m, replace=False)
        data[et] = (torch.as_tensor(flat // n_dst), torch.as_tensor(flat % n_dst))
    g = dgl.heterograph(data, num_nodes_dict=sizes)
    for et in S.ALL_RELATIONS:
        g.edges[et].data[S.WEIGHT] = torch.as_tensor(
            rng.uniform(0.1, 1.0, g.num_edges(et)), dtype=torch.float32
        )
    return g


def _dense(g, et) -> np.ndarray:
    """A[i, j] = weight of edge j -> i, built with a plain loop."""
    a = np.zeros((g.num_nodes(et[2]), g.num_nodes(et[0])))
    src, dst = g.edges(etype=et)
    for s, d, w in zip(src.tolist(), dst.tolist(), g.edges[et].data[S.WEIGHT].tolist()):
        a[d, s] += w
    return a


def _reference(g, relations, x, layers, mode):
    h = {k: v.detach().double().numpy() for k, v in x.items()}
    layers_out = [h]
    for _ in range(layers):
        new = {k: np.zeros_like(v) for k, v in h.items()}
        for et, scale in relations:
            if et[2] in new:
                new[et[2]] += scale * _dense(g, et) @ h[et[0]]
        h = new
        layers_out.append(h)
    if mode == "last":
        return layers_out[-1]
    total = {k: sum(lo[k] for lo in layers_out) for k in h}
    if mode == "sum":
        return total
    return {k: v / (layers + 1) for k, v in total.items()}


CASES = {
    "bipartite": [(S.INTERACTS, 1.0), (S.INTERACTED_BY, 1.0)],
    "homogeneous_mixed": [(S.ITEM_CO, 0.2), (S.ITEM_SEMANTIC_IMAGE, 0.3),
                          (S.ITEM_SEMANTIC_TEXT, 0.5)],
    "all_with_scales": [(S.INTERACTS, 0.7), (S.INTERACTED_BY, 1.3), (S.USER_CO, 0.4),
                        (S.USER_INTEREST_IMAGE, 0.12), (S.USER_INTEREST_TEXT, 0.48),
                        (S.ITEM_CO, 0.2), (S.ITEM_SEMANTIC_TEXT, 0.8),
                        (S.ITEM_SEMANTIC_IMAGE, 0.0)],
}


def _inputs(case, d=6, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = {S.ITEM: torch.randn(N_ITEMS, d, generator=gen)}
    if case != "homogeneous_mixed":
        x[S.USER] = torch.randn(N_USERS, d, generator=gen)
    return x


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("mode", ["last", "mean", "sum"])
@pytest.mark.parametrize("layers", [1, 3])
def test_backends_match_reference_and_each_other(case, mode, layers):
    g = _random_graph()
    relations = CASES[case]
    ref = _reference(g, relations, _inputs(case), layers, mode)
    outs, grads = {}, {}
    for backend in ("dgl", "sparse"):
        x = {k: v.requires_grad_() for k, v in _inputs(case).items()}
        out = Propagation(g, relations, backend=backend)(x, layers, mode)
        assert set(out) == set(x)
        for k in x:
            assert out[k].shape == x[k].shape
            np.testing.assert_allclose(out[k].detach().numpy(), ref[k], rtol=1e-5, atol=1e-5)
        # A loss that weights every output entry differently, so the gradient is informative.
        loss = sum((o * torch.arange(o.numel()).view_as(o).float().sin()).sum()
                   for o in out.values())
        loss.backward()
        outs[backend] = {k: v.detach() for k, v in out.items()}
        grads[backend] = {k: v.grad.clone() for k, v in x.items()}
    for k in outs["dgl"]:
        torch.testing.assert_close(outs["dgl"][k], outs["sparse"][k], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grads["dgl"][k], grads["sparse"][k], rtol=1e-5, atol=1e-5)


def test_gradient_matches_transpose_reference():
    g = _random_graph(3)
    relations = [(S.ITEM_CO, 0.6), (S.ITEM_SEMANTIC_TEXT, 0.4)]
    a = sum(s * _dense(g, et) for et, s in relations)
    for backend in ("dgl", "sparse"):
        x = torch.randn(N_ITEMS, 4, dtype=torch.float64, requires_grad=True)
        out = propagate(g, relations, {S.ITEM: x}, layers=1, mode="last", backend=backend)
        upstream = torch.randn(N_ITEMS, 4, dtype=torch.float64)
        (out[S.ITEM] * upstream).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), a.T @ upstream.numpy(), atol=1e-6)


def test_zero_scale_is_skipped_and_unreached_types_get_zeros():
    g = _random_graph()
    op = Propagation(g, [(S.ITEM_CO, 1.0), (S.USER_CO, 0.0)], backend="sparse")
    assert [et for et, _ in op.relations] == [S.ITEM_CO]
    x = {S.ITEM: torch.randn(N_ITEMS, 3), S.USER: torch.randn(N_USERS, 3)}
    for backend in ("dgl", "sparse"):
        op.backend = backend
        out = op(x, layers=1, mode="last")
        assert torch.all(out[S.USER] == 0)
        out = op(x, layers=0, mode="mean")
        assert torch.equal(out[S.ITEM], x[S.ITEM])


def test_bad_inputs_are_rejected():
    g = _random_graph()
    op = Propagation(g, [(S.INTERACTS, 1.0)])
    with pytest.raises(ValueError, match="lacks node type"):
        op({S.ITEM: torch.randn(N_ITEMS, 2)}, 1)
    with pytest.raises(ValueError, match="shape"):
        op({S.USER: torch.randn(N_USERS + 1, 2)}, 1)
    with pytest.raises(ValueError, match="mode"):
        op({S.USER: torch.randn(N_USERS, 2)}, 1, mode="max")
    with pytest.raises(ValueError, match="backend"):
        Propagation(g, [], backend="cuda")


def test_sparse_operator_sums_duplicates_and_backpropagates_through_x():
    rows = torch.tensor([0, 0, 2, 1, 0])
    cols = torch.tensor([1, 1, 0, 3, 2])
    vals = torch.tensor([0.5, 0.25, 2.0, -1.0, 3.0])
    dense = torch.zeros(3, 4).index_put_((rows, cols), vals, accumulate=True)
    x = torch.randn(4, 2, requires_grad=True)
    y = SparseOperator(rows, cols, vals, (3, 4))(x)
    torch.testing.assert_close(y, dense @ x)
    weights = torch.randn(3, 2)
    (y * weights).sum().backward()
    torch.testing.assert_close(x.grad, dense.T @ weights)


def test_graph_is_not_modified():
    g = _random_graph()
    before = {et: g.edges[et].data[S.WEIGHT].clone() for et in S.ALL_RELATIONS}
    keys = {et: set(g.edges[et].data.keys()) for et in S.ALL_RELATIONS}
    propagate(g, [(S.ITEM_CO, 0.5)], {S.ITEM: torch.randn(N_ITEMS, 2)}, 2, backend="dgl")
    for et in S.ALL_RELATIONS:
        assert torch.equal(g.edges[et].data[S.WEIGHT], before[et])
        assert set(g.edges[et].data.keys()) == keys[et]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sparse_backend_on_cuda_matches_cpu():
    g = _random_graph()
    relations = CASES["all_with_scales"]
    op = Propagation(g, relations)
    x = {k: v.requires_grad_() for k, v in _inputs("all_with_scales").items()}
    xc = {k: v.detach().cuda().requires_grad_() for k, v in x.items()}
    out, outc = op(x, 2, "mean"), op(xc, 2, "mean")
    sum(o.sum() for o in out.values()).backward()
    sum(o.sum() for o in outc.values()).backward()
    for k in x:
        torch.testing.assert_close(outc[k].cpu(), out[k], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(xc[k].grad.cpu(), x[k].grad, rtol=1e-5, atol=1e-5)


def test_cpu_product_ignores_whatever_its_result_held():
    """``_spmm`` writes into uninitialised memory through ``addmm(beta=0)``: the garbage
    there, NaNs included, must not reach the result."""
    torch.manual_seed(0)
    dense = torch.rand(7, 5) * (torch.rand(7, 5) < 0.4)
    a = dense.to_sparse_csr()
    x = torch.randn(5, 3)
    garbage = torch.full((7, 3), float("nan"))
    torch.addmm(garbage, a, x, beta=0, out=garbage)
    torch.testing.assert_close(garbage, dense @ x)
    torch.testing.assert_close(_spmm(a, x), dense @ x)


def test_relation_matrices_are_compact_with_32_bit_indices():
    # Two relations over the same (src, dst) pair share entries, so the summed matrix has
    # fewer entries than edges: its CSR must not keep the edges' storage alive.
    g = _random_graph(3)
    op = Propagation(g, [(S.USER_CO, 0.3), (S.USER_INTEREST_IMAGE, 0.7)], backend="sparse")
    a, a_t = op._pairs[(S.USER, S.USER)]
    edges = g.num_edges(S.USER_CO) + g.num_edges(S.USER_INTEREST_IMAGE)
    assert a._nnz() < edges
    for m in (a, a_t):
        assert m.crow_indices().dtype == m.col_indices().dtype == torch.int32
        assert m.col_indices().untyped_storage().nbytes() == 4 * m._nnz()
        assert m.values().untyped_storage().nbytes() == 4 * m._nnz()
    wide = torch.sparse_csr_tensor(a.crow_indices().long(), a.col_indices().long(), a.values(),
                                   a.shape, check_invariants=True)
    x = torch.randn(N_USERS, 3)
    assert torch.equal(_spmm(a, x), _spmm(wide, x))
    torch.testing.assert_close(a_t.to_dense(), a.to_dense().T)
