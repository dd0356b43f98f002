"""The feature-table projection equals ``F.linear`` in value and in every gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rearm_dgl.models.projection import table_projection


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("table_trains", [True, False])
def test_matches_linear(bias, table_trains):
    torch.manual_seed(0)
    lin = torch.nn.Linear(37, 5, bias=bias).double()
    x = torch.randn(23, 37, dtype=torch.float64, requires_grad=table_trains)
    g = torch.randn(23, 5, dtype=torch.float64)
    got = table_projection(x, lin)
    want = F.linear(x, lin.weight, lin.bias)
    torch.testing.assert_close(got, want)
    params = [p for p in (x, lin.weight, lin.bias) if p is not None and p.requires_grad]
    grads_got = torch.autograd.grad(got, params, g)
    grads_want = torch.autograd.grad(want, params, g)
    for a, b in zip(grads_got, grads_want, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b)
