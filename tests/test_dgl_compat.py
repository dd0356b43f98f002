"""DGL 2.1.0 works on the installed torch through rearm_dgl._dgl."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from rearm_dgl import _dgl
from rearm_dgl._dgl import dgl, fn


def _graph():
    return dgl.heterograph(
        {("user", "interacts", "item"): (torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 2])),
         ("item", "interacted_by", "user"): (torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1, 2]))},
        num_nodes_dict={"user": 3, "item": 4},
    )


def test_heterograph_construction():
    g = _graph()
    assert sorted(g.ntypes) == ["item", "user"]
    assert g.num_nodes("item") == 4  # an isolated item is kept through num_nodes_dict
    assert g.num_edges(("user", "interacts", "item")) == 4
    assert g.in_degrees(etype="interacts").tolist() == [1, 2, 1, 0]


def test_update_all_with_edge_weights_and_autograd():
    g = _graph()
    et = ("user", "interacts", "item")
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    w = torch.rand(4, dtype=torch.float64, requires_grad=True)
    with g.local_scope():
        g.nodes["user"].data["h"] = x
        g.edges[et].data["w"] = w
        g.update_all(fn.u_mul_e("h", "w", "m"), fn.sum("m", "y"), etype=et)
        y = g.nodes["item"].data["y"]
    assert "w" not in g.edges[et].data  # local_scope leaves the graph untouched
    src, dst = g.edges(etype=et)
    expected = torch.zeros(4, 2, dtype=torch.float64).index_add(0, dst, x[src] * w[:, None])
    torch.testing.assert_close(y, expected)
    upstream = torch.randn(4, 2, dtype=torch.float64)
    (y * upstream).sum().backward()
    torch.testing.assert_close(
        x.grad, torch.zeros(3, 2, dtype=torch.float64).index_add(0, src, upstream[dst] * w[:, None])
    )
    torch.testing.assert_close(w.grad, (x[src] * upstream[dst]).sum(1).detach())


def test_save_load_round_trip(tmp_path):
    g = _graph()
    g.edges["interacts"].data["w"] = torch.rand(4)
    path = tmp_path / "g.bin"
    dgl.save_graphs(str(path), [g])
    (h,), _ = dgl.load_graphs(str(path))
    assert h.canonical_etypes == g.canonical_etypes
    assert h.num_nodes("item") == 4
    for et in g.canonical_etypes:
        assert all(torch.equal(a, b) for a, b in zip(h.edges(etype=et), g.edges(etype=et)))
    torch.testing.assert_close(h.edges["interacts"].data["w"], g.edges["interacts"].data["w"])


def test_placeholder_graphbolt_raises_clear_error():
    if not _dgl.GRAPHBOLT_STUBBED:
        pytest.skip("DGL's own graphbolt loads with this torch; nothing was patched")
    gb = sys.modules["dgl.graphbolt"]
    with pytest.raises(AttributeError, match="graphbolt.*unavailable"):
        gb.ItemSampler  # noqa: B018


def test_graphbolt_available_only_with_matching_library(tmp_path, monkeypatch):
    version = torch.__version__.split("+", maxsplit=1)[0]
    (tmp_path / "graphbolt").mkdir()
    assert not _dgl.graphbolt_available(tmp_path)  # no library for this torch: patch
    (tmp_path / "graphbolt" / "libgraphbolt_pytorch_1.0.0.so").touch()
    assert not _dgl.graphbolt_available(tmp_path)  # a library for another torch: patch
    (tmp_path / "graphbolt" / f"libgraphbolt_pytorch_{version}.so").touch()

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "torchdata.datapipes" else real(name, *a))
    assert _dgl.graphbolt_available(tmp_path)  # everything matches: nothing is patched

    def missing(name, *a):
        if name == "torchdata.datapipes":
            raise ModuleNotFoundError("No module named 'torchdata'")
        return real(name, *a)

    monkeypatch.setattr(importlib.util, "find_spec", missing)
    assert not _dgl.graphbolt_available(tmp_path)


def test_stub_state_matches_installed_libraries():
    assert _dgl.GRAPHBOLT_STUBBED == (not _dgl.graphbolt_available())
