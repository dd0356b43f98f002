"""No host syncs in the training batch loop: what a GPU would wait on, checked on the CPU.

A CPU run cannot observe a device sync, so these tests record the operators that force one
(reading a scalar, ``nonzero``, ``unique``, boolean-mask indexing: anything whose result the
host must see before it can go on) with a ``TorchDispatchMode``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch
from test_rearm import BASE, _batch, _tiny_data
from torch.utils._python_dispatch import TorchDispatchMode

from rearm_dgl.config import GraphConfig, build_config
from rearm_dgl.graphs.build import build_graph
from rearm_dgl.models.rearm import REARM
from rearm_dgl.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")

# Operators whose result (or output size) the host needs: each one is a device sync.
SYNCING = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "nonzero_static",
           "_unique2", "unique_dim", "unique_consecutive", "masked_select", "equal"}


class SyncRecorder(TorchDispatchMode):
    """Counts the syncing operators dispatched while it is active."""

    def __init__(self):
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNCING:
            self.calls[name] += 1
        elif name == "index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                     for i in args[1] if i is not None):
            self.calls["index with a bool mask"] += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture
def device_attention(monkeypatch):
    """REARM's device paths on the CPU: the attention dropout (the CPU kernel draws its seed
    on the host) and InfoNCE over masked repeats."""
    import rearm_dgl.models.attention as attention
    import rearm_dgl.models.rearm as rearm_mod

    monkeypatch.setattr(attention, "_chunked_kernel_applies", lambda x: False)
    monkeypatch.setattr(rearm_mod, "_sync_free", lambda x: True)


def test_rearm_training_step_has_no_host_sync(device_attention):
    data = _tiny_data()
    graph = build_graph(data, GraphConfig(user_knn_k=4, item_knn_k=3))
    torch.manual_seed(0)
    model = REARM.build(dataclasses.replace(BASE, train_meta=True), data, graph,
                        torch.device("cpu"))
    opt = model.configure_optimizer(1e-3)
    model.train()
    batch = _batch(data)
    for _ in range(2):  # the optimiser's first step creates its state
        with SyncRecorder() as rec:
            out = model.loss(batch)
            opt.zero_grad(set_to_none=True)
            out.total.backward()
            opt.step()
    assert not rec.calls, f"host syncs in a training step: {dict(rec.calls)}"


def test_recorder_sees_a_scalar_read():
    """The check can fail: the per-batch float() reads the loop had are caught."""
    with SyncRecorder() as rec:
        float(torch.ones(()).sum())
        torch.unique(torch.tensor([1, 1, 2]))
    assert rec.calls["_local_scalar_dense"] == 1 and rec.calls["_unique2"] == 1


@pytest.mark.parametrize("model", ["rearm", "mf"])
def test_scalar_reads_per_epoch_do_not_grow_with_batches(tiny_data, tmp_path, device_attention,
                                                         model):
    """The loop sums losses as tensors: the reads per epoch are the same for 1 or 6 batches."""
    reads = {}
    graph = None
    for batch_size in (100000, 50):
        cfg = build_config(model, tiny_data.source,
                           overrides=["train.epochs=1", f"train.batch_size={batch_size}"])
        if model == "rearm" and graph is None:  # built outside the count
            graph = build_graph(tiny_data, cfg.graph)
        n_batches = -(-tiny_data.train.shape[1] // batch_size)
        with SyncRecorder() as rec:
            fit(cfg, runs_dir=tmp_path / str(batch_size), data=tiny_data, graph=graph,
                quiet=True)
        reads[n_batches] = rec.calls["_local_scalar_dense"]
    assert len(reads) == 2 and max(reads) >= 5
    assert len(set(reads.values())) == 1, f"scalar reads by number of batches: {reads}"


def test_fit_hands_the_device_to_the_sampler(tiny_data, tmp_path, monkeypatch):
    """The trainer asks for each epoch's batches on its device (one copy per epoch)."""
    from rearm_dgl.sampling import BPRSampler

    asked = []
    original = BPRSampler.batches

    def batches(self, epoch, device=None):
        asked.append(device)
        return original(self, epoch, device)

    monkeypatch.setattr(BPRSampler, "batches", batches)
    cfg = build_config("mf", tiny_data.source, overrides=["train.epochs=2", "train.device=cpu"])
    fit(cfg, runs_dir=tmp_path, data=tiny_data, quiet=True)
    assert asked == [torch.device("cpu")] * 2
