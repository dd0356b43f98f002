"""Build the relation heterograph of spec section 1 from one dataset.

Every relation in :mod:`rearm_dgl.graphs.schema` becomes one edge type with its weight in
``edata["w"]`` (float32). Edges go from the message sender to the receiver: row ``i`` of a
propagation matrix gathering from column ``j`` is the edge ``j -> i``. Everything uses the
training interactions only (except the users' fallback degree, spec 1.6).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from rearm_dgl._dgl import dgl
from rearm_dgl.config import GraphConfig
from rearm_dgl.data.dataset import Interactions
from rearm_dgl.graphs import schema as S
from rearm_dgl.graphs.cooccurrence import cooccurrence_edges
from rearm_dgl.graphs.knn import modality_knn

__all__ = ["build_graph", "graph_stats", "interaction_weights"]

Edges = tuple[np.ndarray, np.ndarray, np.ndarray]
_EMPTY: Edges = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))


def interaction_weights(users: np.ndarray, items: np.ndarray, n_users: int,
                        n_items: int) -> np.ndarray:
    """Symmetric-norm weight ``1/sqrt((deg(u) + 1e-7) (deg(i) + 1e-7))`` of each pair."""
    deg_u = np.bincount(users, minlength=n_users).astype(np.float64) + 1e-7
    deg_i = np.bincount(items, minlength=n_items).astype(np.float64) + 1e-7
    return (1.0 / np.sqrt(deg_u[users] * deg_i[items])).astype(np.float32)


def build_graph(data: Interactions, cfg: GraphConfig,
                timings: dict[str, float] | None = None,
                progress: Callable[[str], None] | None = None):
    """Build the heterograph with every relation of spec section 1.

    Args:
        data: The dataset (training pairs, features, CSR views).
        cfg: Graph settings (kNN sizes, co-occurrence weight mode, seed).
        timings: If given, filled with build seconds per relation name (the kNN relations
            of one modality share their Gram matrix; it is counted with the item relation).
        progress: If given, called with one line as each relation is done, e.g.
            ``graph: co_user (user co-occurrence, top 40) 12.3s``; a large dataset's build
            takes minutes, and this is how a user sees it move.

    Returns:
        A ``DGLHeteroGraph`` with node types ``user``/``item`` and the schema's edge types.
    """
    timings = {} if timings is None else timings
    rel: dict[tuple[str, str, str], Edges] = {}

    def done(*names_and_what: tuple[str, str]) -> None:
        if progress is not None:
            for name, what in names_and_what:
                progress(f"graph: {name} ({what}) {timings[name]:.1f}s")

    t = time.perf_counter()
    users, items = data.train[0].astype(np.int64), data.train[1].astype(np.int64)
    w = interaction_weights(users, items, data.n_users, data.n_items)
    rel[S.INTERACTS] = (items, users, w)  # dst item, src user
    rel[S.INTERACTED_BY] = (users, items, w)
    timings["interacts"] = timings["interacted_by"] = time.perf_counter() - t
    done((S.INTERACTS[1], f"{users.size} training pairs, both directions"))

    r = data.train_csr
    t = time.perf_counter()
    known_degree = np.diff(data.known_csr.indptr)
    rel[S.USER_CO] = cooccurrence_edges(r, cfg.user_knn_k, known_degree, cfg.co_weight_mode,
                                        seed=[cfg.seed, 0])
    timings[S.USER_CO[1]] = time.perf_counter() - t
    done((S.USER_CO[1], f"user co-occurrence, top {cfg.user_knn_k}"))
    t = time.perf_counter()
    rel[S.ITEM_CO] = cooccurrence_edges(r.T.tocsr(), cfg.item_knn_k, data.item_degree,
                                        cfg.co_weight_mode, seed=[cfg.seed, 1])
    timings[S.ITEM_CO[1]] = time.perf_counter() - t
    done((S.ITEM_CO[1], f"item co-occurrence, top {cfg.item_knn_k}"))

    for feat, item_et, user_et in (
        (data.image_feat, S.ITEM_SEMANTIC_IMAGE, S.USER_INTEREST_IMAGE),
        (data.text_feat, S.ITEM_SEMANTIC_TEXT, S.USER_INTEREST_TEXT),
    ):
        if feat is None:
            rel[item_et] = rel[user_et] = _EMPTY
            timings[item_et[1]] = timings[user_et[1]] = 0.0
            continue
        part: dict[str, float] = {}
        rel[item_et], rel[user_et] = modality_knn(r, feat, cfg.item_knn_k, cfg.user_knn_k,
                                                  timings=part)
        timings[item_et[1]], timings[user_et[1]] = part["item"], part["user"]
        done((item_et[1], f"item kNN, k {cfg.item_knn_k}"),
             (user_et[1], f"user kNN, k {cfg.user_knn_k}"))

    t = time.perf_counter()
    graph = dgl.heterograph(
        {et: (torch.from_numpy(src), torch.from_numpy(dst)) for et, (dst, src, _) in rel.items()},
        num_nodes_dict={S.USER: data.n_users, S.ITEM: data.n_items},
        idtype=torch.int64,
    )
    for et, (_, _, weight) in rel.items():
        graph.edges[et].data[S.WEIGHT] = torch.from_numpy(np.asarray(weight, dtype=np.float32))
    timings["assemble"] = time.perf_counter() - t
    done(("assemble", "heterograph"))
    return graph


def graph_stats(graph) -> dict:
    """Nodes, edges and in-degree summaries per relation, and cold users/items.

    Cold users (items) are those without any training interaction edge.
    """
    stats: dict = {"nodes": {nt: graph.num_nodes(nt) for nt in graph.ntypes}, "relations": {}}
    for et in graph.canonical_etypes:
        deg = graph.in_degrees(etype=et).double()
        stats["relations"][et[1]] = {
            "src": et[0], "dst": et[2], "edges": int(graph.num_edges(et)),
            "in_degree_min": int(deg.min()) if deg.numel() else 0,
            "in_degree_mean": float(deg.mean()) if deg.numel() else 0.0,
            "in_degree_max": int(deg.max()) if deg.numel() else 0,
        }
    if S.INTERACTED_BY in graph.canonical_etypes:
        stats["cold_users"] = int((graph.in_degrees(etype=S.INTERACTED_BY) == 0).sum())
    if S.INTERACTS in graph.canonical_etypes:
        stats["cold_items"] = int((graph.in_degrees(etype=S.INTERACTS) == 0).sum())
    return stats
