"""Report figures: ablation bars, sensitivity lines and training curves, as PNG and PDF.

Headless and deterministic: figures are drawn on the Agg canvas without pyplot (no global
state, no display), under fixed rc parameters, and saved without the software/date metadata,
so the same runs give byte-identical files.

Conventions shared by every figure: a line or bar is the mean over seeds, and its band or
error bar spans the mean ± the sample standard deviation (ddof=1) over seeds. Titles and axis
labels use the paper's words and symbols (:func:`param_label`), never config keys or
experiment names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from rearm_dgl.reporting.frame import RunFrame, RunRecord
from rearm_dgl.reporting.tables import dataset_title, model_label

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


def save_figure(fig, path: Path) -> list[str]:
    """Write ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` with no metadata that changes.

    Returns:
        The two file names.
    """
    from rearm_dgl.io_utils import atomic_save

    png, pdf = path.with_suffix(".png"), path.with_suffix(".pdf")
    atomic_save(png, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI,
                                             metadata={"Software": None}))
    atomic_save(pdf, lambda tmp: fig.savefig(tmp, format="pdf", metadata={
        "Creator": None, "Producer": None, "CreationDate": None}))
    return [png.name, pdf.name]


#: Swept config keys -> (symbol, words) as the REARM paper and spec name them.
PARAM_LABELS = {
    "graph.user_knn_k": ("$k_u$", "user kNN size"),
    "graph.item_knn_k": ("$k_i$", "item kNN size"),
    "rearm.n_layers": ("$L$", "heterography layers"),
    "rearm.n_uu_layers": ("$L_u$", "user homography layers"),
    "rearm.n_ii_layers": ("$L_i$", "item homography layers"),
    "rearm.cl_tmp": (r"$\tau$", "contrastive temperature"),
    "rearm.cl_loss_weight": (r"$\lambda_{cl}$", "contrastive loss weight"),
    "rearm.diff_loss_weight": (r"$\lambda_{orth}$", "orthogonal loss weight"),
    "rearm.u_mm_image_weight": ("$b$", "image weight, user interest graph"),
    "rearm.i_mm_image_weight": ("$a$", "image weight, item semantic graph"),
    "rearm.uu_co_weight": ("", "user co-occurrence weight"),
    "rearm.ii_co_weight": ("", "item co-occurrence weight"),
    "rearm.rank": ("$r$", "meta-network rank"),
    "rearm.s_drop": ("", "self-attention dropout"),
    "rearm.m_drop": ("", "cross-attention dropout"),
    "train.lr": ("", "learning rate"),
    "train.batch_size": ("", "batch size"),
}


def param_label(key: str, words_only: bool = False) -> str:
    """``graph.user_knn_k`` -> ``user kNN size $k_u$`` (or ``user kNN size``).

    Unknown keys give their field name in words (``n_layers`` -> ``n layers``).
    """
    symbol, words = PARAM_LABELS.get(key, ("", key.rsplit(".", 1)[-1].replace("_", " ")))
    return words if words_only or not symbol else f"{words} {symbol}"


def _symbol(key: str) -> str:
    """The paper's symbol of a swept key (``$k_u$``), else its words."""
    symbol, _ = PARAM_LABELS.get(key, ("", ""))
    return symbol or param_label(key, words_only=True)


def _models_title(frame: RunFrame, records: Sequence[RunRecord]) -> str:
    models = list(dict.fromkeys(r.model for r in records))
    return ", ".join(model_label(m) for m in models)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


# ---------------------------------------------------------------------------------------
# Ablation


def ablation_figure(frame: RunFrame, experiments: Sequence[str], path: Path,
                    metric: str = "Recall@20") -> list[str]:
    """Change of the test metric against the reference variant, in %, one bar per dataset.

    The reference is each ablation's first variant (the full model). A bar is the change of
    the variant's mean over seeds; its error bar is the variant's std over seeds, in % of the
    reference mean. Differences of 1% therefore stay visible.
    """
    with _style():
        blocks = []
        for exp in experiments:
            recs = frame.select(experiment=exp)
            variants = frame.ordered(exp, "variant")
            models = frame.ordered(exp, "model")
            rows = [(m, v) for m in models for v in variants
                    if any(r.model == m and r.variant == v for r in recs)]
            blocks.append((exp, recs, rows, frame.ordered(exp, "dataset"), len(models) == 1))
        height = sum(1.0 + 0.36 * max(1, len(rows) - 1) * max(1, len(ds)) ** 0.5
                     for _, _, rows, ds, _ in blocks)
        fig = _figure(7.0, max(2.8, height + 0.9))
        axes = fig.subplots(len(blocks), 1, squeeze=False)[:, 0]
        for n_block, (ax, (_exp, recs, rows, datasets, one_model)) in enumerate(
                zip(axes, blocks), 1):
            n_d = len(datasets)
            bar_h = 0.8 / n_d
            labels = {r.variant: r.label for r in recs}
            seeds = sorted({r.seed for r in recs})
            refs = {m: next(v for mm, v in rows if mm == m) for m, _ in rows}
            shown = [(m, v) for m, v in rows if refs[m] != v]
            for j, d in enumerate(datasets):
                deltas, errs = [], []
                for m, v in shown:
                    ref = [r.metric(metric) for r in recs
                           if r.model == m and r.variant == refs[m] and r.dataset == d]
                    cur = [r.metric(metric) for r in recs
                           if r.model == m and r.variant == v and r.dataset == d]
                    if not ref or not cur or _mean_std(ref)[0] <= 0:
                        deltas.append(math.nan)
                        errs.append(0.0)
                        continue
                    ref_mean = _mean_std(ref)[0]
                    mean, std = _mean_std(cur)
                    deltas.append((mean - ref_mean) / ref_mean * 100)
                    errs.append(std / ref_mean * 100)
                y = np.arange(len(shown)) + (j - (n_d - 1) / 2) * bar_h
                ax.barh(y, deltas, height=bar_h * 0.9, xerr=errs, color=PALETTE[j % 10],
                        label=dataset_title(d), capsize=2, error_kw={"elinewidth": 0.8})
                for yy, delta, err in zip(y, deltas, errs):
                    if not math.isnan(delta):  # the value, outside the error bar
                        ax.annotate(f"{delta:+.1f}%".replace("-", "\u2212"),
                                    (delta + math.copysign(err, delta or 1), yy),
                                    xytext=(4 if delta >= 0 else -4, 0),
                                    textcoords="offset points", va="center",
                                    ha="left" if delta >= 0 else "right", fontsize=7)
            ax.axvline(0, color="black", linewidth=0.8)
            ax.set_yticks(np.arange(len(shown)))
            ax.set_yticklabels([labels.get(v, v) if one_model else
                                f"{model_label(m)} {labels.get(v, v)}" for m, v in shown])
            ax.invert_yaxis()
            ref_names = ", ".join(dict.fromkeys(labels.get(refs[m], refs[m]) for m, _ in rows))
            ax.set_xlabel(f"change of test {metric} against {ref_names} (%; mean ± std over "
                          f"{len(seeds)} seeds)")
            where = f" on {dataset_title(datasets[0])}" if n_d == 1 else ""
            title = (f"Ablation of {_models_title(frame, recs)}{where}: each component "
                     f"removed in turn")
            if len(blocks) > 1:
                title += f" ({n_block}/{len(blocks)})"
            ax.set_title(title)
            ax.grid(axis="y", visible=False)
            if n_d > 1:
                ax.legend(title="dataset", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                          frameon=False)
            lo, hi = ax.get_xlim()
            span = max(abs(lo), abs(hi)) * 1.15  # room for the value labels
            ax.set_xlim(-span, span)  # zero in the middle: gains and losses read alike
        return save_figure(fig, path)


# ---------------------------------------------------------------------------------------
# Sensitivity


def _numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def sensitivity_figure(frame: RunFrame, experiments: Sequence[str], path: Path,
                       metrics: Sequence[str] = ("Recall@20", "NDCG@20")) -> list[str]:
    """Metric vs swept parameter, one line per dataset, band = mean ± std over seeds.

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
        fig = _figure(3.8 * len(metrics) + 0.6, 3.2 * max(1, len(blocks)) + 0.8)
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
                        name = dataset_title(d) + (f", {_symbol(second)} = {sval}"
                                                   if second else "")
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
                ax.set_xlabel(param_label(xkey))
                ax.set_ylabel(f"test {metric}")
                ax.set_title(f"{_models_title(frame, recs)}: test {metric} vs "
                             f"{param_label(xkey, words_only=True)}")
        if handles:
            seeds = sorted({r.seed for r in frame.records
                            if r.experiment in {b[0] for b in blocks}})
            seconds = list(dict.fromkeys(b[3] for b in blocks if b[3]))
            what = ", ".join(["dataset"] + [param_label(k) for k in seconds])
            width = fig.get_figwidth()
            longest = max(len(n) for n in handles)
            fig.legend(list(handles.values()), list(handles.keys()),
                       title=f"{what} (line: mean, band: ± std over {len(seeds)} seeds)",
                       loc="outside lower center",
                       ncol=max(1, min(len(handles), int(width / (0.07 * longest + 0.7)))))
        return save_figure(fig, path)


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
                  valid_metric: str = "Recall@20") -> list[str]:
    """Training loss and validation metric per epoch: columns datasets, one line per model.

    Lines are the mean over seeds at each epoch; bands span the mean ± std over seeds.
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
                    mean, sd = (np.array(v) for v in zip(*(_mean_std(x) for x in vals)))
                    lo, hi = mean - sd, mean + sd
                    ax = axes[row, j]
                    # Distinct dashes and markers keep overlapping curves apart; past the
                    # palette's 10 colours the dash pattern shifts, so no two models share both.
                    (line,) = ax.plot(ep, mean, color=PALETTE[k % 10],
                                      linestyle=LINESTYLES[(k + k // 10) % len(LINESTYLES)],
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
                   title=f"model (line: mean, band: ± std over {len(seeds)} seeds)",
                   loc="outside lower center",
                   ncol=max(1, min(len(handles), int(width // 1.6))))
        return save_figure(fig, path)


__all__ = ["PARAM_LABELS", "ablation_figure", "curves_figure", "param_label", "save_figure",
           "sensitivity_figure"]
