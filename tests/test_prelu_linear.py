"""``prelu_linear`` equals ``linear(prelu(h))`` in value and in every gradient."""

from __future__ import annotations

import torch
from torch import nn

from rearm_dgl.models.prelu_linear import prelu_linear


def test_matches_the_two_modules():
    torch.manual_seed(0)
    act, lin = nn.PReLU().double(), nn.Linear(6, 4).double()
    with torch.no_grad():
        act.weight.fill_(0.3)
    h = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        h[0, :3] = 0.0  # the kink: PReLU's gradient there is alpha
    g = torch.randn(9, 4, dtype=torch.float64)
    params = [h, act.weight, lin.weight, lin.bias]
    got, want = prelu_linear(h, act, lin), lin(act(h))
    torch.testing.assert_close(got, want)
    for a, b in zip(torch.autograd.grad(got, params, g), torch.autograd.grad(want, params, g),
                    strict=True):
        torch.testing.assert_close(a, b)


def test_passes_gradcheck():
    from rearm_dgl.models.prelu_linear import _PReLULinear

    torch.manual_seed(1)
    args = (torch.randn(5, 3, dtype=torch.float64), torch.tensor([0.2], dtype=torch.float64),
            torch.randn(2, 3, dtype=torch.float64), torch.randn(2, dtype=torch.float64))
    args = tuple(a.requires_grad_() for a in args)
    assert torch.autograd.gradcheck(_PReLULinear.apply, args)
