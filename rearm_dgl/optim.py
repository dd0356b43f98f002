"""Optimiser steps taken inside the backward pass, one large parameter at a time.

A plain training step holds every parameter's gradient at once: after ``backward()`` and
until ``optimizer.step()``. For REARM that is the gradients of its four feature tables, as
large as the tables themselves (0.48 GB at Baby, 4.3 GiB at Amazon-Elec size).
:func:`step_in_backward` makes the optimiser update each large parameter as soon as its
gradient is complete (``Tensor.register_post_accumulate_grad_hook``) and frees that gradient
at once, so only one large gradient is alive at a time.

The update is the one ``optimizer.step()`` would make: Adam, AdamW and the other
element-wise optimisers update each parameter from its own gradient and state only, and the
gradient is complete when the hook runs (autograd sums every contribution before it
accumulates). The trainer's ``optimizer.step()`` after the backward then updates the small
parameters and skips the large ones, whose gradient is already ``None``. The optimiser
object is unchanged (same ``state_dict``, learning-rate groups and checkpoints).

A parameter updated in place while autograd still needs its old value would raise
autograd's "modified by an inplace operation" error rather than compute something else.
"""

from __future__ import annotations

import torch

__all__ = ["EAGER_MIN_NUMEL", "step_in_backward"]

#: Parameters with at least this many elements are stepped in the backward (4 MiB of float32).
EAGER_MIN_NUMEL = 1 << 20


def step_in_backward(optimizer: torch.optim.Optimizer, min_numel: int = EAGER_MIN_NUMEL
                     ) -> list:
    """Update ``optimizer``'s parameters of at least ``min_numel`` elements during backward.

    Args:
        optimizer: An element-wise optimiser (Adam, AdamW, SGD, ...), not one that combines
            parameters (LBFGS) or a loop that clips the global gradient norm.
        min_numel: Smallest parameter stepped early.

    Returns:
        The hook handles; ``handle.remove()`` on each restores the plain behaviour. Every
        backward through these parameters steps them while the hooks are registered.
    """
    owner: dict[torch.Tensor, dict] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.requires_grad and p.numel() >= min_numel:
                owner[p] = group

    def hook(p: torch.Tensor) -> None:
        groups = optimizer.param_groups
        optimizer.param_groups = [{**owner[p], "params": [p]}]  # same settings, one tensor
        try:
            optimizer.step()
        finally:
            optimizer.param_groups = groups
        p.grad = None

    return [p.register_post_accumulate_grad_hook(hook) for p in owner]
