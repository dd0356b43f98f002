"""The row-wise L2 normalisation equals ``F.normalize`` in value and gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rearm_dgl.models.normalize import l2_normalize


@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 6)])
def test_matches_f_normalize_with_zero_and_tiny_rows(shape):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64)
    x[0] = 0.0            # a zero row: the clamp holds the denominator at eps
    x[1] = x[1] * 1e-14   # a row below eps
    g = torch.randn(*shape, dtype=torch.float64)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    got, want = l2_normalize(a, 1e-12), F.normalize(b, dim=-1, eps=1e-12)
    torch.testing.assert_close(got, want)
    got.backward(g)
    want.backward(g)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=0)


def test_gradient_passes_gradcheck():
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: l2_normalize(t), (x,))
