"""Optimiser steps inside the backward: the same training, one large gradient at a time."""

from __future__ import annotations

import pytest
import torch
from test_rearm import BASE, _batch, _tiny_data

from rearm_dgl.config import GraphConfig
from rearm_dgl.graphs.build import build_graph
from rearm_dgl.models.rearm import REARM
from rearm_dgl.optim import step_in_backward

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(model, steps: int, eager_min: int | None, batches) -> tuple[dict, list]:
    opt = model.configure_optimizer(1e-2)
    if eager_min is not None:
        step_in_backward(opt, eager_min)
    grads_seen = []
    model.train()
    for i in range(steps):
        torch.manual_seed(100 + i)  # the same dropout draws in both runs
        out = model.loss(batches[i % len(batches)])
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        grads_seen.append({n for n, p in model.named_parameters() if p.grad is not None})
        opt.step()
    return opt.state_dict(), grads_seen


@pytest.mark.parametrize("eager_min", [1, 200])
def test_rearm_trains_identically_with_steps_in_the_backward(eager_min):
    data = _tiny_data()
    graph = build_graph(data, GraphConfig(user_knn_k=4, item_knn_k=3))
    torch.manual_seed(0)
    plain = REARM.build(BASE, data, graph, torch.device("cpu"))
    torch.manual_seed(0)
    eager = REARM.build(BASE, data, graph, torch.device("cpu"))
    batches = [_batch(data, seed=s) for s in range(3)]
    state_p, seen_p = _train(plain, 4, None, batches)
    state_e, seen = _train(eager, 4, eager_min, batches)
    for (name, p), q in zip(plain.named_parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=0, msg=name)
    for key, st in state_p["state"].items():
        for k, v in st.items():
            torch.testing.assert_close(state_e["state"][key][k], v, rtol=0, atol=0)
    # The large parameters' gradients were freed in the backward; the small ones wait.
    large = {n for n, p in eager.named_parameters() if p.numel() >= eager_min}
    small = {n for n, p in eager.named_parameters()} - large
    assert large and all(not (s & large) for s in seen)
    assert [s & small for s in seen] == [s & small for s in seen_p]
    assert eager_min == 1 or any(s & small for s in seen)


def _sgd_pair():
    w, x = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w, x], lr=0.1)
    step_in_backward(opt, 1)
    return w, x, opt


def test_each_parameter_is_stepped_once_with_its_complete_gradient():
    w, x, opt = _sgd_pair()
    y = (w * 2).sum() + (w * w).sum() + (w.detach() * x).sum()  # w's gradient: 2 + 2w
    y.backward()
    opt.step()
    torch.testing.assert_close(w.detach(), torch.full((3,), 0.6))
    torch.testing.assert_close(x.detach(), torch.full((3,), 0.9))
    assert w.grad is None and x.grad is None


def test_a_parameter_still_needed_by_the_backward_is_an_error_not_a_wrong_update():
    """x's backward reads w (through a detached view) after w's gradient is complete: the
    in-place step of w trips autograd's version check."""
    w, x, _ = _sgd_pair()
    y = (w.detach() * x).sum() + (w * 2).sum()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()
