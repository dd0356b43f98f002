"""Graph cache: one ``dgl.save_graphs`` file per (dataset content, graph settings).

The key hashes the dataset fingerprint (split and feature files), every ``GraphConfig`` field
and a format version, so changed data or settings simply miss. The file is written to a
temporary name and renamed, so a killed build never leaves a partial cache; a JSON sidecar
records the dataset, the settings, the file's size and the build seconds per relation.

A cache file is trusted only when it reads back, its size and sidecar match, and its node
counts are the dataset's; otherwise it is rebuilt with a one-line message. One process at a
time builds or reads an entry (an OS file lock, ``<key>.lock``): a second process waits and
then loads what the first wrote, and temporary files left by a killed build are removed at
the next start, once no process holds their entry.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout

from rearm_dgl._dgl import dgl
from rearm_dgl.config import GraphConfig
from rearm_dgl.data.dataset import Interactions
from rearm_dgl.graphs import schema as S
from rearm_dgl.graphs.build import build_graph
from rearm_dgl.io_utils import atomic_path, atomic_write_json, hash_parts, read_json

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


def _read(path: Path, data: Interactions, cfg: GraphConfig):
    """The cached graph, or ValueError saying why it cannot be trusted."""
    meta = read_json(path.with_suffix(".json"))
    if meta is not None:  # the sidecar is written after the graph: a missing one is no proof
        if meta.get("bytes") is not None and meta["bytes"] != path.stat().st_size:
            raise ValueError(f"it has {path.stat().st_size} bytes, {meta['bytes']} were "
                             f"written: truncated")
        if meta.get("data_fingerprint") not in (None, data.fingerprint) \
                or meta.get("graph") not in (None, dataclasses.asdict(cfg)):
            raise ValueError("its sidecar names another dataset or other graph settings")
    graphs, _ = dgl.load_graphs(str(path))
    graph = graphs[0]
    missing = [et for et in S.ALL_RELATIONS if et not in graph.canonical_etypes]
    no_weight = [et for et in S.ALL_RELATIONS
                 if et not in missing and S.WEIGHT not in graph.edges[et].data]
    if len(graphs) != 1 or missing or no_weight:
        raise ValueError(f"unexpected content (missing relations {missing or no_weight})")
    n_users, n_items = graph.num_nodes(S.USER), graph.num_nodes(S.ITEM)
    if (n_users, n_items) != (data.n_users, data.n_items):
        raise ValueError(f"it holds {n_users} users and {n_items} items, the dataset "
                         f"{data.n_users} and {data.n_items}: it belongs to another dataset")
    return graph


def _reason(err: Exception) -> str:
    """One line for a failed read: DGL's errors carry a C++ log prefix and a stack trace."""
    text = (str(err).strip().splitlines() or [""])[0]
    text = re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", text).strip()  # "[12:00:00] file.cc:43: "
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _remove_orphans(folder: Path, own_key: str) -> None:
    """Delete temporary files that killed builds left in ``folder``.

    ``atomic_path`` names them ``.<key>.bin.<random>.bin.tmp`` (or ``.json``); one is an
    orphan when no process holds its entry's lock. Ours is held by the caller.
    """
    for tmp in folder.glob(".*.tmp"):
        key = tmp.name[1:].split(".", 1)[0]
        if key == own_key:
            tmp.unlink(missing_ok=True)
            continue
        try:
            with FileLock(folder / f"{key}.lock", timeout=0):
                tmp.unlink(missing_ok=True)
        except Timeout:
            pass  # another process is writing it right now


def load_or_build_graph(data: Interactions, cfg: GraphConfig,
                        log: Callable[[str], None] | None = None):
    """Return the relation heterograph for (data, cfg), from the cache when possible.

    Args:
        data: The dataset; its ``fingerprint`` and ``cache_dir`` locate the cache.
        cfg: Graph settings.
        log: Receives one-line progress messages, one per relation while building
            (default: this module's logger).

    Returns:
        The ``DGLHeteroGraph`` (see :func:`rearm_dgl.graphs.build.build_graph`).
    """
    log = log or _log.info
    path = cache_path(data, cfg)
    if path is None:
        log("graph: dataset has no cache folder or fingerprint; building without caching")
        return build_graph(data, cfg, progress=log)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path.with_suffix(".lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            log(f"graph: another process is building {path.name}; waiting for it")
            lock.acquire(timeout=-1)
    except OSError as err:
        log(f"graph: cannot use the cache folder {path.parent} ({err}); building without it")
        return build_graph(data, cfg, progress=log)
    try:
        _remove_orphans(path.parent, path.stem)
        return _load_or_build(data, cfg, path, log)
    finally:
        lock.release()


def _load_or_build(data: Interactions, cfg: GraphConfig, path: Path,
                   log: Callable[[str], None]):
    if path.exists():
        t = time.perf_counter()
        try:
            graph = _read(path, data, cfg)
        except Exception as err:  # any file that fails a check is rebuilt, never trusted
            log(f"graph: cache file {path} cannot be used ({_reason(err)}); rebuilding it")
        else:
            log(f"graph: loaded from cache {path} in {time.perf_counter() - t:.2f}s")
            return graph

    log(f"graph: building {data.name} (cache miss)")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    graph = build_graph(data, cfg, timings=timings, progress=log)
    total = time.perf_counter() - t
    try:
        with atomic_path(path, suffix=".bin") as tmp:
            dgl.save_graphs(str(tmp), [graph])
            size = tmp.stat().st_size
        atomic_write_json(path.with_suffix(".json"), {
            "format_version": FORMAT_VERSION, "dataset": data.name,
            "data_fingerprint": data.fingerprint, "graph": dataclasses.asdict(cfg),
            "bytes": size,
            "build_seconds": {"total": round(total, 3),
                              **{k: round(v, 3) for k, v in timings.items()}},
            "edges": {et[1]: int(graph.num_edges(et)) for et in graph.canonical_etypes},
        })
    except OSError as err:
        log(f"graph: could not write the cache {path} ({err}); continuing without it")
    else:
        log(f"graph: built in {total:.1f}s, cached at {path}")
    return graph
