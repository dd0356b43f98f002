"""Report figures: ablation bars, sensitivity lines and training curves.

Headless and deterministic: figures are drawn on the Agg canvas without pyplot (no global
state, no display), under fixed rc parameters, and saved without the software/date metadata,
so the same runs give byte-identical PNGs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from rearm_dgl.reporting.frame import RunFrame, RunRecord
from rearm_dgl.reporting.tables import dataset_title, model_label
from rearm_dgl.reporting.tables import short as short_metric

DPI = 150
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
RC = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
    "savefig.dpi": DPI,
    "path.simplify": False,
    "svg.hashsalt": "rearm-dgl",
}


@contextmanager
def _style():
    import matplotlib

    with matplotlib.rc_context(RC):
        yield


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: Path) -> None:
    """Write ``fig`` as a PNG with no metadata that changes between runs."""
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


# ---------------------------------------------------------------------------------------
# Ablation


def ablation_figure(frame: RunFrame, experiments: Sequence[str], path: Path,
                    metric: str = "Recall@20") -> None:
    """Grouped horizontal bars: one group per variant, one bar per dataset, +- std."""
    with _style():
        blocks = []
        for exp in experiments:
            recs = frame.select(experiment=exp)
            variants = frame.ordered(exp, "variant")
            models = frame.ordered(exp, "model")
            rows = [(m, v) for m in models for v in variants
                    if any(r.model == m and r.variant == v for r in recs)]
            blocks.append((exp, recs, rows, frame.ordered(exp, "dataset"), len(models) == 1))
        height = sum(0.9 + 0.42 * len(rows) * max(1, len(ds)) ** 0.5 for _, _, rows, ds, _ in
                     blocks)
        fig = _figure(7.0, max(2.8, height + 0.8))
        axes = fig.subplots(len(blocks), 1, squeeze=False)[:, 0]
        for ax, (exp, recs, rows, datasets, one_model) in zip(axes, blocks):
            n_d = len(datasets)
            bar_h = 0.8 / n_d
            labels = {r.variant: r.label for r in recs}
            seeds = sorted({r.seed for r in recs})
            for j, d in enumerate(datasets):
                means, stds = [], []
                for m, v in rows:
                    vals = [r.metric(metric) for r in recs
                            if r.model == m and r.variant == v and r.dataset == d]
                    mean, std = _mean_std(vals) if vals else (math.nan, 0.0)
                    means.append(mean)
                    stds.append(std)
                y = np.arange(len(rows)) + (j - (n_d - 1) / 2) * bar_h
                ax.barh(y, means, height=bar_h * 0.9, xerr=stds, color=PALETTE[j % 10],
                        label=dataset_title(d), capsize=2, error_kw={"elinewidth": 0.8})
                if rows and not math.isnan(means[0]):
                    # The first variant is the reference: a dashed line makes changes visible.
                    ax.axvline(means[0], color=PALETTE[j % 10], linestyle="--", linewidth=0.9,
                               label=f"{dataset_title(d)}: {labels.get(rows[0][1], rows[0][1])}")
            ax.set_yticks(np.arange(len(rows)))
            ax.set_yticklabels([labels.get(v, v) if one_model else
                                f"{model_label(m)} {labels.get(v, v)}" for m, v in rows])
            ax.invert_yaxis()  # first variant (the reference) on top
            ax.set_xlabel(f"test {metric} (mean ± std over {len(seeds)} seeds)")
            ax.set_ylabel("variant")
            ax.set_title(f"Ablation: {exp}")
            ax.grid(axis="y", visible=False)
            ax.legend(title="dataset", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      frameon=False)
            ax.set_xlim(left=0)
        save_png(fig, path)


# ---------------------------------------------------------------------------------------
# Sensitivity


def _numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def sensitivity_figure(frame: RunFrame, experiments: Sequence[str], path: Path,
                       metrics: Sequence[str] = ("Recall@20", "NDCG@20")) -> None:
    """Metric vs swept parameter, one line per dataset, band = mean +- std over seeds.

    One row of panels per sweep experiment, one panel per metric. In a two-parameter sweep
    the x axis is the first parameter and each value of the second gets its own line style
    (colour = dataset), so all points share one y axis and compare directly.
    """
    with _style():
        blocks = []
        for exp in experiments:
            recs = frame.select(experiment=exp)
            keys = list(recs[0].sweep) if recs else []
            if keys:
                blocks.append((exp, recs, keys[0], keys[1] if len(keys) > 1 else None))
        fig = _figure(3.8 * len(metrics) + 0.6, 3.2 * max(1, len(blocks)) + 0.6)
        axes = fig.subplots(max(1, len(blocks)), len(metrics), squeeze=False)
        handles = {}
        for row, (exp, recs, xkey, second) in enumerate(blocks):
            xs = list(dict.fromkeys(r.sweep[xkey] for r in recs))
            numeric = _numeric(xs)
            if numeric:
                xs = sorted(xs)
            svals = list(dict.fromkeys(r.sweep[second] for r in recs)) if second else [None]
            if second and _numeric(svals):
                svals = sorted(svals)
            datasets = frame.ordered(exp, "dataset")
            for col, metric in enumerate(metrics):
                ax = axes[row, col]
                for j, d in enumerate(datasets):
                    for k, sval in enumerate(svals):
                        means, stds, pos = [], [], []
                        for i, x in enumerate(xs):
                            vals = [r.metric(metric) for r in recs if r.dataset == d
                                    and r.sweep[xkey] == x
                                    and (second is None or r.sweep[second] == sval)]
                            if not vals:
                                continue
                            mean, std = _mean_std(vals)
                            means.append(mean)
                            stds.append(std)
                            pos.append(x if numeric else i)
                        if not means:
                            continue
                        m, sd = np.array(means), np.array(stds)
                        name = dataset_title(d) + (f", {second} = {sval}" if second else "")
                        (line,) = ax.plot(pos, m, color=PALETTE[j % 10],
                                          linestyle=LINESTYLES[k % len(LINESTYLES)],
                                          marker=MARKERS[k % len(MARKERS)], ms=5, label=name)
                        ax.fill_between(pos, m - sd, m + sd, color=PALETTE[j % 10], alpha=0.15,
                                        linewidth=0)
                        handles.setdefault(name, line)
                if numeric:
                    ax.set_xticks(xs)
                else:
                    ax.set_xticks(range(len(xs)))
                    ax.set_xticklabels([str(x) for x in xs])
                ax.set_xlabel(xkey)
                ax.set_ylabel(f"test {metric}")
                ax.set_title(f"{exp}: {short_metric(metric)} vs {xkey.rsplit('.', 1)[-1]}")
        if handles:
            seeds = sorted({r.seed for r in frame.records
                            if r.experiment in {b[0] for b in blocks}})
            fig.legend(list(handles.values()), list(handles.keys()),
                       title=f"dataset (line: mean, band: ± std over {len(seeds)} seeds)",
                       loc="outside lower center", ncol=min(4, len(handles)))
        save_png(fig, path)


# ---------------------------------------------------------------------------------------
# Training curves


def _curve(rec: RunRecord, valid_metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from rearm_dgl.tracking import read_metrics

    epochs, loss, valid = [], [], []
    for row in read_metrics(rec.run_dir):
        if "epoch" not in row:
            continue
        parts = row.get("loss")
        if isinstance(parts, dict):
            total = parts.get("total", sum(float(v) for v in parts.values()))
        else:
            total = float(parts) if parts is not None else math.nan
        epochs.append(int(row["epoch"]))
        loss.append(float(total))
        valid.append(float((row.get("valid") or {}).get(valid_metric, math.nan)))
    return np.array(epochs), np.array(loss), np.array(valid)


def curves_figure(frame: RunFrame, records: Sequence[RunRecord], path: Path,
                  valid_metric: str = "Recall@20") -> None:
    """Training loss and validation metric per epoch: columns datasets, one line per model.

    Lines are the mean over seeds at each epoch; bands span the seeds' min and max.
    """
    with _style():
        datasets = list(dict.fromkeys(r.dataset for r in records))
        series = list(dict.fromkeys((r.model, r.variant, r.label) for r in records))
        model_order = list(dict.fromkeys(m for e in dict.fromkeys(r.experiment for r in records)
                                         for m in frame.ordered(e, "model")))
        series.sort(key=lambda s: model_order.index(s[0]) if s[0] in model_order else 99)
        one_variant = len({(v) for _, v, _ in series}) == 1
        width = max(6.4, 3.8 * len(datasets))
        fig = _figure(width, 5.8)
        axes = fig.subplots(2, len(datasets), squeeze=False, sharex="col")
        handles = {}
        for j, d in enumerate(datasets):
            for k, (m, v, label) in enumerate(series):
                runs = [r for r in records if r.dataset == d and r.model == m and r.variant == v]
                if not runs:
                    continue
                name = model_label(m) if one_variant else f"{model_label(m)} {label}"
                curves = [_curve(r, valid_metric) for r in runs]
                for row, idx in ((0, 1), (1, 2)):
                    table: dict[int, list[float]] = {}
                    for c in curves:
                        for e, val in zip(c[0], c[idx]):
                            if not math.isnan(val):
                                table.setdefault(int(e), []).append(float(val))
                    if not table:
                        continue
                    ep = np.array(sorted(table))
                    vals = [table[e] for e in ep]
                    mean = np.array([np.mean(x) for x in vals])
                    lo = np.array([np.min(x) for x in vals])
                    hi = np.array([np.max(x) for x in vals])
                    ax = axes[row, j]
                    # Distinct dashes and markers keep overlapping curves apart.
                    (line,) = ax.plot(ep, mean, color=PALETTE[k % 10],
                                      linestyle=LINESTYLES[k % len(LINESTYLES)],
                                      marker=MARKERS[k % len(MARKERS)] if len(ep) < 12 else None,
                                      ms=4, label=name)
                    ax.fill_between(ep, lo, hi, color=PALETTE[k % 10], alpha=0.2, linewidth=0)
                    handles.setdefault(name, line)
            axes[0, j].set_title(dataset_title(d))
            axes[0, j].set_ylabel("training loss (sum of parts)")
            axes[1, j].set_ylabel(f"validation {valid_metric}")
            axes[1, j].set_xlabel("epoch")
            axes[1, j].xaxis.get_major_locator().set_params(integer=True)
        seeds = sorted({r.seed for r in records})
        fig.legend(list(handles.values()), list(handles.keys()),
                   title=f"model (line: mean, band: min-max over {len(seeds)} seeds)",
                   loc="outside lower center",
                   ncol=max(1, min(len(handles), int(width // 1.6))))
        save_png(fig, path)


__all__ = ["ablation_figure", "curves_figure", "save_png", "sensitivity_figure"]
