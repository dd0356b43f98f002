"""The relation heterograph of spec section 1: build, cache, statistics and propagation."""

from rearm_dgl.graphs.build import build_graph, graph_stats
from rearm_dgl.graphs.cache import load_or_build_graph
from rearm_dgl.graphs.propagate import Propagation, propagate

__all__ = ["build_graph", "load_or_build_graph", "graph_stats", "Propagation", "propagate"]
