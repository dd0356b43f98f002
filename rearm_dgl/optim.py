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

**Row by row.** An operation whose backward can produce a parameter's gradient a block of
rows at a time (REARM's feature-table projections: ``grad[a:b] @ W``) may hand those blocks
to :func:`step_by_rows` instead of returning the whole gradient. Each block is stepped as
soon as it is made, while it is still in the CPU's cache, so the whole gradient (0.32 GB for
Baby's user-image table) is never allocated, written and read back. The update is the same
element for element: each element's update reads only that element of the gradient, the
parameter and the state (on the first step the optimiser makes each block's state and the
blocks are gathered). This applies only to the parameters :func:`step_in_backward`
registered, and only while that operation is the parameter's sole use: a gradient that
reaches a parameter from anywhere else in the same backward is an error, not a second update.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.weak import WeakTensorKeyDictionary

__all__ = ["EAGER_MIN_NUMEL", "step_by_rows", "step_in_backward"]

#: Parameters with at least this many elements are stepped in the backward (4 MiB of float32).
EAGER_MIN_NUMEL = 1 << 20

#: Bytes of gradient per row block on the CPU. Baby's user-image table (19,445 x 4,096),
#: gradient rows ``g @ W`` and fused AdamW, 2 threads: 0.080 s per step in 16 MiB blocks,
#: 0.086 in 8 MiB, 0.102 in 4 MiB (more optimiser calls), 0.098 in 32 MiB (out of cache),
#: against 0.154 s for the whole gradient and then the step.
#: Only CPU parameters are stepped by rows: a GPU has no such cache to keep a block in, and
#: each block would cost it kernel launches.
CPU_ROW_BLOCK_BYTES = 16 << 20

# Registered parameter -> its row stepper (weak: a dropped model releases it).
_ROW_STEPPERS = WeakTensorKeyDictionary()
# How many of this module's own optimiser steps are running (they are not the caller's step).
_inner_steps = [0]


def step_in_backward(optimizer: torch.optim.Optimizer, min_numel: int = EAGER_MIN_NUMEL,
                     row_steps: bool = True) -> list:
    """Update ``optimizer``'s parameters of at least ``min_numel`` elements during backward.

    Args:
        optimizer: An element-wise optimiser (Adam, AdamW, SGD, ...), not one that combines
            parameters (LBFGS) or a loop that clips the global gradient norm.
        min_numel: Smallest parameter stepped early.
        row_steps: Also let these parameters be stepped by rows (:func:`step_by_rows`).

    Returns:
        The hook handles; ``handle.remove()`` on each restores the plain behaviour. Every
        backward through these parameters steps them while the hooks are registered.
    """
    large = [p for group in optimizer.param_groups for p in group["params"]
             if p.requires_grad and p.numel() >= min_numel]

    def hook(p: torch.Tensor) -> None:
        if p.grad is None:
            return  # every contribution was None: stepped by rows, or no gradient at all
        stepper = _ROW_STEPPERS.get(p)
        if stepper is not None and stepper.stepped:
            raise RuntimeError(
                f"a parameter of shape {tuple(p.shape)} was stepped row by row in this "
                "backward and then received a gradient from another operation; an operation "
                "that steps by rows must be the parameter's only use (or call step_in_backward "
                "with row_steps=False)")
        _step_alone(optimizer, p)
        p.grad = None

    handles = [p.register_post_accumulate_grad_hook(hook) for p in large]
    if row_steps:
        for p in large:
            _ROW_STEPPERS[p] = _RowStepper(optimizer, p)
        handles.append(optimizer.register_step_post_hook(_end_of_step))
        handles.append(_Unregister(large))
    return handles


def step_by_rows(p: Tensor, fill_rows: Callable[[int, int, Tensor], object]) -> bool:
    """Step ``p`` one block of gradient rows at a time, if it is registered for that now.

    Call it from a backward in place of returning ``p``'s gradient.

    Args:
        p: The parameter whose gradient the caller would return.
        fill_rows: ``fill_rows(a, b, out)`` writes rows ``a:b`` of that gradient into ``out``
            (a ``(b - a, *p.shape[1:])`` tensor). It must not read ``p``: rows before ``a``
            are already updated.

    Returns:
        True when ``p`` was stepped (the caller returns None as its gradient); False when
        it was not (the caller returns the whole gradient as usual): ``p`` was not
        registered by :func:`step_in_backward`, is not on the CPU or is a scalar, keeps
        state that is not per element, or the backward builds a graph of its own
        (``create_graph``).
    """
    stepper = _ROW_STEPPERS.get(p)
    if stepper is None or torch.is_grad_enabled() or not stepper.ready():
        return False
    stepper.run(fill_rows)
    return True


def _group_of(optimizer: torch.optim.Optimizer, p: Tensor) -> dict:
    """``p``'s parameter group as it is now.

    Looked up at each step, not kept: ``load_state_dict`` (a resumed run) replaces the group
    dicts, and a learning-rate schedule then changes the new ones.
    """
    for group in optimizer.param_groups:
        if any(q is p for q in group["params"]):
            return group
    raise RuntimeError(f"a parameter of shape {tuple(p.shape)} is no longer in the optimiser")


def _step_alone(optimizer: torch.optim.Optimizer, p: Tensor, group: dict | None = None
                ) -> None:
    """``optimizer.step()`` for ``p`` alone, with its group's settings (or ``group``'s)."""
    groups = optimizer.param_groups
    group = group if group is not None else _group_of(optimizer, p)
    optimizer.param_groups = [{**group, "params": [p]}]
    _inner_steps[0] += 1
    try:
        optimizer.step()
    finally:
        optimizer.param_groups = groups
        _inner_steps[0] -= 1


class _RowStepper:
    """Steps one registered parameter from gradient blocks of rows."""

    def __init__(self, optimizer: torch.optim.Optimizer, p: Tensor):
        self.optimizer, self.p = optimizer, p
        self.stepped = False  # stepped by rows since the optimiser's last step() call

    def ready(self) -> bool:
        """Whether ``p`` is a CPU table and every state tensor is per element or a scalar."""
        state = self.optimizer.state.get(self.p, {})
        return self.p.device.type == "cpu" and self.p.dim() > 0 and all(
            not _per_element(v) or v.shape == self.p.shape for v in state.values())

    def run(self, fill_rows: Callable[[int, int, Tensor], object]) -> None:
        p, optimizer = self.p, self.optimizer
        state = optimizer.state[p]
        # On the first step the optimiser makes each block's state; it is gathered here.
        made: dict = {}
        group = _group_of(optimizer, p)
        n = p.shape[0]
        step = max(1, CPU_ROW_BLOCK_BYTES // max(1, p[0].numel() * p.element_size()))
        buffer = p.new_empty((min(n, step), *p.shape[1:]))
        last: dict = {}
        for a in range(0, n, step):
            b = min(n, a + step)
            rows = p.detach()[a:b]  # shares p's storage
            rows.grad = buffer[:b - a]
            fill_rows(a, b, rows.grad)
            # Per-element state is sliced; scalar state (Adam's step count) starts from the
            # same value for every block and is written back once, after the last.
            optimizer.state[rows] = {
                k: v[a:b] if _per_element(v) else v.clone() if torch.is_tensor(v) else v
                for k, v in state.items()}
            try:
                _step_alone(optimizer, rows, group)
            finally:
                last = optimizer.state.pop(rows)
            if not state:
                self._gather(made, last, a, b)
        if not state:
            state.update(made)
        for k, v in last.items():
            if not _per_element(v):
                state[k] = v
        self.stepped = True

    def _gather(self, made: dict, block: dict, a: int, b: int) -> None:
        """Copy one block's fresh per-element state into whole-parameter tensors in ``made``."""
        for k, v in block.items():
            if not _per_element(v):
                continue
            if v.shape != (b - a, *self.p.shape[1:]):
                raise RuntimeError(
                    f"{type(self.optimizer).__name__} keeps state {k!r} of shape "
                    f"{tuple(v.shape)} for a block of shape {(b - a, *self.p.shape[1:])}: it "
                    "is not element-wise, so it cannot step by rows; call step_in_backward "
                    "with row_steps=False")
            if k not in made:
                made[k] = torch.empty_like(self.p, dtype=v.dtype)
            made[k][a:b] = v


def _per_element(v) -> bool:
    """Whether a state value is a tensor with a shape (not a scalar or a plain number)."""
    return torch.is_tensor(v) and v.dim() > 0


def _end_of_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """After the caller's ``optimizer.step()``: the next backward may step by rows again."""
    if _inner_steps[0]:
        return  # one of this module's own steps, inside the backward
    for stepper in _ROW_STEPPERS.values():
        if stepper.optimizer is optimizer:
            stepper.stepped = False


class _Unregister:
    """A handle that ends row stepping for the given parameters."""

    def __init__(self, params: list[Tensor]):
        self.params = params

    def remove(self) -> None:
        for p in self.params:
            _ROW_STEPPERS.pop(p, None)
