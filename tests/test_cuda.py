"""The CUDA paths against the CPU: same weights, same batch, same numbers.

These run only where torch sees a CUDA device (the GPU benchmark machine runs them before it
times anything); elsewhere the device paths are checked on the CPU by test_rearm_sync.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_models_behaviour import fixed_batch, planted_graph
from test_rearm import BASE, _batch, _tiny_data

from rearm_dgl.config import EvalConfig, GraphConfig
from rearm_dgl.evaluation import evaluate, model_scorer
from rearm_dgl.graphs.build import build_graph
from rearm_dgl.models import registry
from rearm_dgl.models.rearm import REARM

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
CUDA = torch.device("cuda")
CPU = torch.device("cpu")
TOL = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture(scope="module")
def planted():
    return planted_graph()


def _pair(cls, params, data, graph):
    """The model built on the CPU and on CUDA, holding the same weights."""
    torch.manual_seed(0)
    cpu = cls.build(params, data, graph, CPU)
    torch.manual_seed(0)
    gpu = cls.build(params, data, graph, CUDA)
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu


@pytest.mark.parametrize("name", registry.names())
def test_every_model_scores_the_same_on_cuda(name, planted):
    data, graph = planted
    cls = registry.get(name)
    cpu, gpu = _pair(cls, cls.config_cls(), data, graph)
    cfg = EvalConfig(topk=(10, 20), metric="Recall@20")
    results = []
    for model, device in ((cpu, CPU), (gpu, CUDA)):
        model.eval()
        with torch.no_grad():
            users, items = model.embeddings()
            scores = model.score(torch.arange(data.n_users, device=device), users, items)
        results.append((scores.cpu(), evaluate(model_scorer(model), data, "valid", cfg, device)))
    torch.testing.assert_close(results[1][0], results[0][0], **TOL)
    for key, value in results[0][1].metrics.items():
        assert results[1][1].metrics[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize("name", registry.names())
def test_every_model_trains_on_cuda(name, planted):
    """One optimiser step on CUDA: a finite loss with the CPU's named parts, weights moved."""
    data, graph = planted
    cls = registry.get(name)
    _, gpu = _pair(cls, cls.config_cls(), data, graph)
    opt = gpu.configure_optimizer(1e-2)
    before = [p.detach().clone() for p in gpu.parameters() if p.requires_grad]
    gpu.train()
    out = gpu.loss(fixed_batch(data).to(CUDA))
    opt.zero_grad(set_to_none=True)
    out.total.backward()
    opt.step()
    assert torch.isfinite(out.total).item()
    assert tuple(out.parts) == tuple(gpu.loss_parts)
    after = [p.detach() for p in gpu.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


def test_rearm_loss_and_gradients_match_the_cpu():
    """Without dropout REARM's training step is deterministic: loss parts and every gradient
    agree between the CPU kernels and the device paths (masked InfoNCE, written-out
    attention)."""
    data = _tiny_data()
    graph = build_graph(data, GraphConfig(user_knn_k=4, item_knn_k=3))
    params = dataclasses.replace(BASE, s_drop=0.0, m_drop=0.0, train_meta=True)
    cpu, gpu = _pair(REARM, params, data, graph)
    batch = _batch(data)
    grads = []
    for model, device in ((cpu, CPU), (gpu, CUDA)):
        model.train()
        model.zero_grad(set_to_none=True)
        out = model.loss(batch.to(device))
        out.total.backward()
        grads.append(({k: float(v) for k, v in out.parts.items()}, float(out.total.detach()),
                      {n: p.grad.cpu() for n, p in model.named_parameters()
                       if p.grad is not None}))
    (parts_c, total_c, g_c), (parts_g, total_g, g_g) = grads
    assert total_g == pytest.approx(total_c, rel=1e-5)
    for key, value in parts_c.items():
        assert parts_g[key] == pytest.approx(value, rel=1e-4, abs=1e-7), key
    assert g_g.keys() == g_c.keys()
    for name, grad in g_c.items():
        torch.testing.assert_close(g_g[name], grad, **TOL, msg=name)
