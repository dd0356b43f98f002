"""Optimiser steps inside the backward: the same training, one large gradient at a time."""

from __future__ import annotations

import pytest
import torch
from test_rearm import BASE, _batch, _tiny_data

from rearm_dgl import optim
from rearm_dgl.config import GraphConfig
from rearm_dgl.graphs.build import build_graph
from rearm_dgl.models.rearm import REARM
from rearm_dgl.optim import step_by_rows, step_in_backward

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(model, steps: int, eager_min: int | None, batches, row_steps: bool = True
           ) -> tuple[dict, list]:
    opt = model.configure_optimizer(1e-2)
    if eager_min is not None:
        step_in_backward(opt, eager_min, row_steps=row_steps)
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


@pytest.mark.parametrize("row_block_bytes", [None, 3 * 16 * 4])
@pytest.mark.parametrize("eager_min", [1, 200])
def test_rearm_trains_identically_with_steps_in_the_backward(eager_min, row_block_bytes,
                                                              monkeypatch):
    """The same weights and optimiser state to the bit, with the feature tables stepped in
    one block or in blocks of 3 image rows (the tiny tables have 30-60 rows)."""
    runs = []
    original_run = optim._RowStepper.run
    monkeypatch.setattr(optim._RowStepper, "run",
                        lambda self, fill: runs.append(1) or original_run(self, fill))
    if row_block_bytes is not None:
        monkeypatch.setattr(optim, "CPU_ROW_BLOCK_BYTES", row_block_bytes)
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
    # The large feature tables were stepped by rows on every step, the first included.
    tables = [t for t in (eager.item_image, eager.item_text, eager.user_image, eager.user_text)
              if t.numel() >= eager_min]
    assert tables and len(runs) == len(tables) * 4


def _table_step(row_steps: bool, block_rows: int, monkeypatch, steps: int = 3) -> list:
    """AdamW steps of a (10, 4) table through the projection; the tables after each."""
    from rearm_dgl.models.projection import table_projection
    monkeypatch.setattr(optim, "CPU_ROW_BLOCK_BYTES", block_rows * 4 * 4)
    torch.manual_seed(0)
    table = torch.nn.Parameter(torch.randn(10, 4))
    lin = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW([table, *lin.parameters()], lr=0.1, weight_decay=0.01)
    step_in_backward(opt, 40, row_steps=row_steps)
    seen = []
    for i in range(steps):
        (table_projection(table, lin) ** 2 * (i + 1)).sum().backward()
        opt.step()
        seen.append(table.detach().clone())
    return seen


@pytest.mark.parametrize("block_rows", [1, 3, 10])
def test_row_steps_are_the_whole_step(block_rows, monkeypatch):
    want = _table_step(False, block_rows, monkeypatch)
    got = _table_step(True, block_rows, monkeypatch)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_gradient_from_another_use_after_row_steps_is_an_error():
    from rearm_dgl.models.projection import table_projection
    table = torch.nn.Parameter(torch.randn(10, 4))
    lin = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD([table, *lin.parameters()], lr=0.1, momentum=0.9)
    step_in_backward(opt, 40)
    table_projection(table, lin).sum().backward()  # first step: makes the momentum state
    opt.step()
    y = table_projection(table, lin).sum() + (table * 3).sum()
    with pytest.raises(RuntimeError, match="stepped row by row"):
        y.backward()


def test_row_steps_need_a_registered_parameter_and_no_create_graph(monkeypatch):
    monkeypatch.setattr(optim, "CPU_ROW_BLOCK_BYTES", 4 * 2 * 4)  # blocks of 4 rows
    table = torch.nn.Parameter(torch.randn(6, 2))
    opt = torch.optim.Adam([table], lr=0.1)
    fill_calls = []

    def fill(a, b, out):
        fill_calls.append((a, b))
        out.fill_(1.0)

    with torch.no_grad():
        assert not step_by_rows(table, fill)  # not registered
    handles = step_in_backward(opt, 1)
    with torch.enable_grad():
        assert not step_by_rows(table, fill)  # a backward with create_graph
    assert not opt.state[table] and not fill_calls
    with torch.no_grad():
        assert step_by_rows(table, fill)  # the first step makes the state block by block
    assert fill_calls == [(0, 4), (4, 6)]
    state = opt.state[table]
    assert int(state["step"]) == 1 and state["exp_avg"].shape == (6, 2)
    torch.testing.assert_close(state["exp_avg"], torch.full((6, 2), 0.1))
    for h in handles:
        h.remove()
    with torch.no_grad():
        assert not step_by_rows(table, fill)


def test_an_optimiser_with_state_that_is_not_per_element_cannot_step_by_rows():
    table = torch.nn.Parameter(torch.randn(6, 4))
    opt = torch.optim.Adafactor([table], lr=0.1)  # factored: row and column statistics
    step_in_backward(opt, 1)
    with torch.no_grad(), pytest.raises(RuntimeError, match="not element-wise"):
        step_by_rows(table, lambda a, b, out: out.fill_(1.0))


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


def test_steps_in_the_backward_follow_the_groups_of_a_loaded_state():
    """A resumed run loads the optimiser's state, which replaces its group dicts; a learning
    rate set on them afterwards (a decay schedule) is the one the large parameters use."""
    w, x, opt = _sgd_pair()
    opt.load_state_dict(opt.state_dict())
    opt.param_groups[0]["lr"] = 0.5
    (w * 2).sum().backward()
    opt.step()
    torch.testing.assert_close(w.detach(), torch.zeros(3))  # 1 - 0.5 * 2
