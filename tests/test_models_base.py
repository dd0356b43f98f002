"""Shared model helpers of rearm_dgl.models.base against plain references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rearm_dgl.models.base import info_nce


@pytest.mark.parametrize("cosine", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_info_nce_matches_cross_entropy(cosine, reduction):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(7, 5, generator=gen, requires_grad=True)
    c = torch.randn(11, 5, generator=gen, requires_grad=True)
    targets = torch.tensor([0, 3, 3, 10, 2, 5, 1])
    got = info_nce(a, c, 0.3, targets, cosine=cosine, reduction=reduction)
    ga, gc = torch.autograd.grad(got, (a, c))
    x, y = (F.normalize(a, dim=1), F.normalize(c, dim=1)) if cosine else (a, c)
    want = F.cross_entropy(x @ y.T / 0.3, targets, reduction=reduction)
    wa, wc = torch.autograd.grad(want, (a, c))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(ga, wa)
    torch.testing.assert_close(gc, wc)


def test_info_nce_in_batch_default_targets():
    a = torch.eye(3)
    # Row n's positive is candidate n: with identical views each row is log(sum exp) - 1/tau.
    expected = torch.logsumexp(torch.eye(3) / 0.5, 1) - 2.0
    torch.testing.assert_close(info_nce(a, a, 0.5), expected.mean())
    with pytest.raises(ValueError, match="reduction"):
        info_nce(a, a, 0.5, reduction="none")
