"""REARM's "w/o attention" and "w/o LayerNorm" variants trained on the demo data."""

from __future__ import annotations

import pytest

from rearm_dgl.config import build_config
from rearm_dgl.data import load_dataset
from rearm_dgl.graphs import load_or_build_graph
from rearm_dgl.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_attention_changes_little_while_layernorm_carries_the_blocks(tmp_path):
    """Demo data, 3 epochs each: w/o attention within a few % of full; w/o LN collapses."""
    base = build_config("rearm", "demo", overrides=["train.epochs=3", "train.patience=5"])
    data = load_dataset(base.data)
    graph = load_or_build_graph(data, base.graph)
    recall = {}
    for name, sets in {"full": [], "no_attention": ["rearm.use_attention=false"],
                       "no_layernorm": ["rearm.use_layernorm=false"]}.items():
        cfg = build_config("rearm", "demo", overrides=["train.epochs=3", "train.patience=5",
                                                       *sets])
        result = fit(cfg, runs_dir=tmp_path / name, data=data, graph=graph, quiet=True)
        recall[name] = result.valid["Recall@20"]
    print(f"valid Recall@20 after 3 epochs: {recall}")
    assert abs(recall["no_attention"] - recall["full"]) <= 0.05 * recall["full"]
    assert recall["no_layernorm"] < 0.6 * recall["full"]
