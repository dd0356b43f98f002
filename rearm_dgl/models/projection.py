"""``x W^T + b`` for a trained feature table ``x``, with a faster weight gradient.

REARM trains its raw feature tables (n x 4096 and n x 384) and projects them to d = 64 on
every batch. Autograd's ``linear`` backward computes the weight gradient as ``x^T g``
(F x n times n x d), which the CPU BLAS runs about 1.6x slower than the same product as
``g^T x`` (d x n times n x F; Baby's user-image table, 2 threads: 72 against 45 ms).
:func:`table_projection` computes the same three gradients, the weight's in the faster
order, and nothing else changes: a test checks outputs and gradients against ``F.linear``.

When the optimiser steps the table inside the backward (:func:`rearm_dgl.optim.step_in_backward`),
the table's gradient ``g W`` is made and stepped a block of rows at a time
(:func:`rearm_dgl.optim.step_by_rows`): the same update, without the whole-table gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rearm_dgl.optim import step_by_rows

__all__ = ["table_projection"]


class _TableProjection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.addmm(bias, x, weight.t()) if bias is not None else x @ weight.t()

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        grad_w = grad.t() @ x if need_w else None  # (d, F), the weight's own layout
        grad_b = grad.sum(0) if need_b and ctx.has_bias else None
        grad_x = None
        # After grad_w, which reads x before its update; None when x was stepped by rows.
        if need_x and not step_by_rows(x, lambda a, b, out: torch.mm(grad[a:b], weight,
                                                                      out=out)):
            grad_x = grad @ weight  # (n, F)
        return grad_x, grad_w, grad_b


def table_projection(x: Tensor, linear: torch.nn.Linear) -> Tensor:
    """``linear(x)`` (n, d) with the same value and gradients, the weight's gradient faster."""
    return _TableProjection.apply(x, linear.weight, linear.bias)
