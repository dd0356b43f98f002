"""``rearm-dgl data``: inspect a dataset, write the demo dataset in the MMRec layout."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from rearm_dgl.config import DataConfig, GraphConfig, check_seed
from rearm_dgl.errors import ConfigError
from rearm_dgl.io_utils import json_default


def _n(x: int) -> str:
    return f"{int(x):,}"


def _shape(arr: np.ndarray | None) -> str:
    return "none" if arr is None else f"{arr.shape[0]:,} x {arr.shape[1]:,} {arr.dtype}"


@click.group(name="data")
def data() -> None:
    """Inspect datasets and write the built-in demo dataset."""


@data.command("demo")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write demo.inter, image_feat.npy, text_feat.npy and features.json.")
@click.option("--seed", default=None, type=int, help="Generator seed (default: the demo's).")
def demo(out: Path, seed: int | None) -> None:
    """Write the built-in demo dataset in the MMRec layout to OUT."""
    from rearm_dgl.data.io import write_mmrec
    from rearm_dgl.data.synthetic import DEMO_NOTE, DemoParams, generate

    if seed is not None:
        check_seed("--seed", seed)
    params = DemoParams() if seed is None else DemoParams(seed=seed)
    d = generate(params)
    meta = {"stand_in": True, "seed": params.seed, "note": DEMO_NOTE}
    written = write_mmrec(out, "demo", {"train": d.train, "valid": d.valid, "test": d.test},
                          d.image_feat, d.text_feat, meta)
    click.echo(f"wrote the demo dataset (seed {params.seed}: {_n(d.n_users)} users, "
               f"{_n(d.n_items)} items, {_n(d.train.shape[1])} train / "
               f"{_n(d.valid.shape[1])} valid / {_n(d.test.shape[1])} test pairs) to {out}:")
    for path in written:
        click.echo(f"  {path.name}  ({path.stat().st_size:,} bytes)")
    click.echo(f"inspect it with: rearm-dgl data info {out}")


@data.command("info")
@click.argument("name_or_path")
@click.option("--data-root", default=None,
              help="Folder holding named datasets (default: $REARM_DGL_DATA or ./data).")
@click.option("--cache-dir", default="", help="Cache folder (default: see DataConfig).")
@click.option("--graph/--no-graph", "with_graph", default=True, show_default=True,
              help="Build (or load from cache) the relation heterograph and print its statistics.")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def info(name_or_path: str, data_root: str | None, cache_dir: str, with_graph: bool,
         as_json: bool) -> None:
    """Print dataset and graph statistics for NAME_OR_PATH (`demo`, a name, or a folder)."""
    from rearm_dgl.data import load_dataset

    cfg = DataConfig(dataset=name_or_path, cache_dir=cache_dir,
                     **({"data_root": data_root} if data_root else {}))
    ds = load_dataset(cfg)  # warnings (dropped rows) reach stderr through the log handler

    stats = ds.summary()
    stats.update(density=ds.density, cold_users=int(ds.cold_users.size),
                 cold_items=int(ds.cold_items.size), cache_dir=str(ds.cache_dir))
    graph_stats, graph_note = (_graph_stats(ds, name_or_path) if with_graph else (None, ""))
    if as_json:
        stats["graph"] = graph_stats
        stats["graph_note"] = graph_note
        click.echo(json.dumps(stats, indent=2, default=json_default))
        return

    total = ds.train.shape[1] + ds.valid.shape[1] + ds.test.shape[1]
    lines = [
        f"dataset        {ds.name}  ({ds.source})",
        f"users          {_n(ds.n_users)}  (cold, no train rows: {_n(ds.cold_users.size)})",
        f"items          {_n(ds.n_items)}  (cold, no train rows: {_n(ds.cold_items.size)})",
        f"pairs          train {_n(ds.train.shape[1])} | valid {_n(ds.valid.shape[1])} | "
        f"test {_n(ds.test.shape[1])} | total {_n(total)}",
        f"density        {100 * ds.density:.4f}%",
        f"dropped rows   valid {_n(ds.dropped.get('valid', 0))} | test "
        f"{_n(ds.dropped.get('test', 0))}  (their user has no training row)",
        f"train/user     mean {ds.user_degree.mean():.2f} | min {ds.user_degree.min()} | "
        f"max {ds.user_degree.max()}",
        f"train/item     mean {ds.item_degree.mean():.2f} | min {ds.item_degree.min()} | "
        f"max {ds.item_degree.max()}",
        f"image_feat     {_shape(ds.image_feat)}",
        f"text_feat      {_shape(ds.text_feat)}",
        f"features_note  {ds.features_note or _default_note(ds)}",
        f"fingerprint    {ds.fingerprint}",
        f"cache_dir      {ds.cache_dir}",
    ]
    click.echo("\n".join(lines))
    if with_graph:
        click.echo("graph" + (f"  ({graph_note})" if graph_note else ""))
        if graph_stats is not None:
            for line in _format_stats(graph_stats, indent=2):
                click.echo(line)


def _default_note(ds) -> str:
    if ds.image_feat is None and ds.text_feat is None:
        return "(no features)"
    return "(features as provided; no features.json stand-in marker)"


def _graph_stats(ds, name_or_path: str) -> tuple[dict | None, str]:
    """Graph statistics, or (None, reason) while the graph module is not available."""
    try:
        from rearm_dgl.graphs import graph_stats, load_or_build_graph
    except ImportError as exc:
        return None, f"graph statistics unavailable: {exc}"
    note = ""
    try:
        from rearm_dgl.config import build_config

        gcfg = build_config(model="rearm", dataset=name_or_path).graph
    except ConfigError as exc:
        if "unknown model" not in str(exc):
            raise
        gcfg = GraphConfig()
        note = "REARM preset unavailable, default graph settings"
    settings = ", ".join(f"{k}={v}" for k, v in vars(gcfg).items())
    graph = load_or_build_graph(ds, gcfg)
    return graph_stats(graph), f"{settings}" + (f"; {note}" if note else "")


def _format_stats(obj, indent: int = 0) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = ":".join(map(str, k)) if isinstance(k, tuple) else str(k)
            if isinstance(v, dict):
                out.append(f"{pad}{key}")
                out.extend(_format_stats(v, indent + 2))
            else:
                out.append(f"{pad}{key:<28} {_fmt_value(v)}")
    else:
        out.append(f"{pad}{_fmt_value(obj)}")
    return out


def _fmt_value(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return _n(v)
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt_value(x) for x in v)
    return str(v)


__all__ = ["data"]
