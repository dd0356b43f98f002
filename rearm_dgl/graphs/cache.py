"""Graph cache: one ``dgl.save_graphs`` file per (dataset content, graph settings).

The key hashes the dataset fingerprint (split and feature files), every ``GraphConfig`` field
and a format version, so changed data or settings simply miss. The file is written to a
temporary name and renamed, so a killed build never leaves a partial cache; a file that
cannot be read back is rebuilt with a message. A JSON sidecar records the settings and the
build seconds per relation.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

from rearm_dgl._dgl import dgl
from rearm_dgl.config import GraphConfig
from rearm_dgl.data.dataset import Interactions
from rearm_dgl.graphs import schema as S
from rearm_dgl.graphs.build import build_graph
from rearm_dgl.io_utils import atomic_path, atomic_write_json, hash_parts

__all__ = ["FORMAT_VERSION", "cache_key", "cache_path", "load_or_build_graph"]

# Bump when the graph's content or layout changes for the same data and settings.
FORMAT_VERSION = 1

_log = logging.getLogger(__name__)


def cache_key(data: Interactions, cfg: GraphConfig) -> str:
    """Hash of the dataset fingerprint, the graph settings and the format version."""
    return hash_parts(["rearm-dgl graph", FORMAT_VERSION, data.fingerprint,
                       dataclasses.asdict(cfg)])


def cache_path(data: Interactions, cfg: GraphConfig) -> Path | None:
    """Where the graph for (data, cfg) is cached; None when the dataset has no cache."""
    if data.cache_dir is None or not data.fingerprint:
        return None
    return Path(data.cache_dir) / "graphs" / f"{cache_key(data, cfg)}.bin"


def _read(path: Path):
    graphs, _ = dgl.load_graphs(str(path))
    graph = graphs[0]
    missing = [et for et in S.ALL_RELATIONS if et not in graph.canonical_etypes]
    no_weight = [et for et in S.ALL_RELATIONS
                 if et not in missing and S.WEIGHT not in graph.edges[et].data]
    if len(graphs) != 1 or missing or no_weight:
        raise ValueError(f"unexpected content (missing relations {missing or no_weight})")
    return graph


def load_or_build_graph(data: Interactions, cfg: GraphConfig,
                        log: Callable[[str], None] | None = None):
    """Return the relation heterograph for (data, cfg), from the cache when possible.

    Args:
        data: The dataset; its ``fingerprint`` and ``cache_dir`` locate the cache.
        cfg: Graph settings.
        log: Receives one-line progress messages (default: this module's logger).

    Returns:
        The ``DGLHeteroGraph`` (see :func:`rearm_dgl.graphs.build.build_graph`).
    """
    log = log or _log.info
    path = cache_path(data, cfg)
    if path is None:
        log("graph: dataset has no cache folder or fingerprint; building without caching")
        return build_graph(data, cfg)
    if path.exists():
        t = time.perf_counter()
        try:
            graph = _read(path)
        except Exception as err:  # any unreadable file is rebuilt, never trusted
            log(f"graph: cache file {path} is unreadable ({type(err).__name__}: {err}); "
                "rebuilding it")
        else:
            log(f"graph: loaded from cache {path} in {time.perf_counter() - t:.2f}s")
            return graph

    log(f"graph: building {data.name} (cache miss)")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    graph = build_graph(data, cfg, timings=timings)
    total = time.perf_counter() - t
    try:
        with atomic_path(path, suffix=".bin") as tmp:
            dgl.save_graphs(str(tmp), [graph])
        atomic_write_json(path.with_suffix(".json"), {
            "format_version": FORMAT_VERSION, "dataset": data.name,
            "data_fingerprint": data.fingerprint, "graph": dataclasses.asdict(cfg),
            "build_seconds": {"total": round(total, 3),
                              **{k: round(v, 3) for k, v in timings.items()}},
            "edges": {et[1]: int(graph.num_edges(et)) for et in graph.canonical_etypes},
        })
    except OSError as err:
        log(f"graph: could not write the cache {path} ({err}); continuing without it")
    else:
        log(f"graph: built in {total:.1f}s, cached at {path}")
    return graph
