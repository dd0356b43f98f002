"""Published numbers (``published.csv``) and the "reported vs reproduced" table.

``published.csv`` ships with the package: one row per number, with the columns ``model``
(registry name), ``dataset``, ``split`` (``test`` or ``valid``), ``metric`` (``Recall@20``),
``value`` and ``source``. It holds every number the specs (``spec/baselines.md`` sections
3.9-8.9 and ``spec/rearm.md`` section 6) give, and nothing else: no published numbers were
found for BPR-MF, LightGCN, VBPR, FREEDOM or DRAGON. Where several sources give one model and
dataset, the first in the file is the reference that the table's change row compares with.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from rearm_dgl.errors import DataError
from rearm_dgl.reporting.frame import RunFrame, RunRecord
from rearm_dgl.reporting.stats import Stat
from rearm_dgl.reporting.tables import (
    MAIN_METRICS,
    PM,
    REARM,
    Table,
    TCell,
    dataset_title,
    fmt_stat,
    model_label,
    short,
)

COLUMNS = ("model", "dataset", "split", "metric", "value", "source")


@dataclass(frozen=True)
class Published:
    """One published number."""

    model: str
    dataset: str
    split: str
    metric: str
    value: float
    source: str


def published_path() -> Path:
    return Path(str(resources.files("rearm_dgl.reporting") / "published.csv"))


def load_published(path: str | Path | None = None) -> list[Published]:
    """Every row of ``published.csv`` (the shipped file unless ``path`` is given), checked.

    Raises:
        DataError: a missing column, an unknown split or a value that is not a number in
            (0, 1], naming the file and line.
    """
    path = Path(path) if path is not None else published_path()
    return list(_load(str(path)))


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[Published, ...]:
    fix = "restore the file from the rearm-dgl package"
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise DataError(path, f"columns are {reader.fieldnames}, not {list(COLUMNS)}",
                                fix)
            rows = list(reader)
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror})", fix) from None
    out = []
    for line, row in enumerate(rows, 2):
        try:
            value = float(row["value"])
        except (TypeError, ValueError):
            value = math.nan
        if not 0 < value <= 1 or row["split"] not in ("test", "valid") or not all(
                row[c] for c in COLUMNS):
            raise DataError(path, f"line {line} is not a valid published number: {row}", fix)
        out.append(Published(row["model"], row["dataset"], row["split"], row["metric"], value,
                             row["source"]))
    return tuple(out)


# ---------------------------------------------------------------------------------------
# Reported vs reproduced


def _reference_runs(frame: RunFrame, model: str, dataset: str) -> list[RunRecord]:
    """Runs of ``model`` on ``dataset`` in the first comparison experiment that has them."""
    for exp in frame.experiment_names("comparison"):
        recs = frame.select(experiment=exp, model=model, dataset=dataset)
        if recs:
            return recs
    return []


def reproduction_tables(frame: RunFrame, published: list[Published] | None = None
                        ) -> list[Table]:
    """Every published number beside this report's runs, one table per dataset.

    A table holds one block of rows per model that a source gives on the dataset (REARM's
    block also on datasets no source gives, when the report has REARM runs there): a row per
    source and, where this report has runs of the model on the dataset, the row of our runs
    (mean ± std over seeds, from the comparison experiments) with the inputs that differ from
    the published setting, and the change of our mean against the block's first source.
    One table per dataset keeps every table on one page. Source numbers are shared by all
    tables.
    """
    published = load_published() if published is None else published
    tests = [p for p in published if p.split == "test"]
    metrics = [m for m in MAIN_METRICS if any(p.metric == m for p in tests)]
    metrics += sorted({p.metric for p in tests} - set(metrics))
    blocks: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
    for p in tests:
        blocks.setdefault((p.model, p.dataset), {}).setdefault(p.source, {})[p.metric] = p.value
    for d in dict.fromkeys(r.dataset for r in frame.records
                           if r.model == REARM and r.kind == "comparison"):
        blocks.setdefault((REARM, d), {})
    order = list(dict.fromkeys(p.model for p in tests)) + [REARM]
    sources = list(dict.fromkeys(p.source for p in tests))
    ref = {s: f"[{i}]" for i, s in enumerate(sources, 1)}
    datasets = sorted({d for _, d in blocks}, key=_dataset_order)
    return [_dataset_table(frame, d, sorted((m for m, dd in blocks if dd == d),
                                            key=lambda m: order.index(m) if m in order
                                            else len(order)),
                           blocks, metrics, ref, [p for p in published if p.split == "valid"])
            for d in datasets]


def _dataset_table(frame: RunFrame, dataset: str, models: list[str],
                   blocks: dict[tuple[str, str], dict[str, dict[str, float]]],
                   metrics: list[str], ref: dict[str, str], valid: list[Published]) -> Table:
    title = dataset_title(dataset)
    rows: list[tuple[str, list[TCell]]] = []
    rules: list[int] = []
    used: list[str] = []
    n_ours = 0
    for model in models:
        rules.append(len(rows))
        label = model_label(model)
        by_source = blocks[(model, dataset)]
        for source, values in by_source.items():
            used.append(source)
            rows.append((label, [TCell(ref[source])]
                         + [TCell(f"{values[m]:.4f}", values[m]) if m in values else TCell("-")
                            for m in metrics] + [TCell("")]))
        recs = _reference_runs(frame, model, dataset)
        if not recs:  # published numbers only
            continue
        n_ours += 1
        stats = {m: Stat.of(frame.values(m, experiment=recs[0].experiment, model=model,
                                         dataset=dataset)) if m in recs[0].test else None
                 for m in metrics}
        rows.append((label, [TCell(f"ours (n = {len(recs)})")]
                     + [TCell("-") if s is None else TCell(fmt_stat(s), s.mean, s)
                        for s in stats.values()]
                     + [TCell("; ".join(input_differences(recs)) or "none found")]))
        if by_source:
            first_source, first = next(iter(by_source.items()))
            rows.append((label, [TCell(f"ours vs {ref[first_source]}")]
                         + [_delta(stats[m], first.get(m)) for m in metrics] + [TCell("")]))
    used = sorted(set(used), key=lambda s: int(ref[s][1:-1]))
    notes = [f"{ref[s]} {s}" for s in used]
    notes += [f"{model_label(p.model)}: {ref.get(p.source, p.source)} also gives validation "
              f"{short(p.metric)} = {p.value:.4f}." for p in valid if p.dataset == dataset]
    caption = [f"Published numbers on {title} beside this report's runs (test split; ours: "
               f"mean {PM} sample std over seeds of the comparison experiment; change in % of "
               f"our mean against the block's first source; a block without a row of ours "
               f"has no run in this report)."
               + (" Sources: " + "; ".join(f"{ref[s]} {s}" for s in used) + "." if used
                  else " No published source gives this dataset.")]
    return Table(
        key=f"reproduction-{dataset}", title=f"Reported vs reproduced: {title}",
        caption=caption, corner="Model",
        groups=[("", ["Numbers"] + [short(m) for m in metrics] + ["Inputs that differ"])],
        rows=rows, notes=notes, wide=True, rules=rules,
        colspec=["l"] + ["r"] * len(metrics) + [r"p{6cm}"],
        meta={"metrics": metrics, "sources": list(ref), "n_reproduced": n_ours,
              "dataset": dataset})


def _dataset_order(name: str) -> tuple[int, str]:
    known = ("baby", "sports", "clothing")
    return (known.index(name) if name in known else len(known), name)


def _delta(ours: Stat | None, published: float | None) -> TCell:
    if ours is None or published is None:
        return TCell("-")
    delta = (ours.mean - published) / published * 100
    return TCell(f"{delta:+.1f}%", delta)


def input_differences(recs: list[RunRecord]) -> list[str]:
    """What differs from the published setting: stand-in features and changed settings."""
    from rearm_dgl.config import build_config

    out = []
    notes = sorted({r.features_note for r in recs if r.features_note})
    out += [f"features: {n.rstrip('.')}" for n in notes]
    model, dataset = recs[0].model, recs[0].dataset
    try:
        preset = build_config(model=model, dataset=dataset).flat()
    except Exception:  # an unknown preset never hides the rest of the report
        return out
    ours = _flat(recs[0].config)
    paper_data = {p.dataset for p in load_published() if p.model == model}
    origin = "paper preset" if dataset in paper_data | {"baby"} and model == REARM \
        else "shipped preset"
    ignore = {"train.seed", "train.device", "eval.batch_size", "train.keep_checkpoints",
              "train.checkpoint_minutes"}
    for key in sorted(set(preset) & set(ours)):
        if key.startswith("data.") or key in ignore:
            continue
        if _norm(preset[key]) != _norm(ours[key]):
            out.append(f"{key} = {ours[key]} ({origin}: {preset[key]})")
    stopped = sorted({r.stop_reason for r in recs if r.stop_reason})
    if stopped:
        out.append(f"stop reason: {', '.join(stopped)}")
    return out


def _flat(config: dict) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, body in config.items() if isinstance(body, dict)
            for k, v in body.items()}


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


__all__ = ["COLUMNS", "Published", "input_differences", "load_published", "published_path",
           "reproduction_tables"]
