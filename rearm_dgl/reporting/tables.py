"""Paper-style tables computed from the one pandas frame of a :class:`RunFrame`.

- the main table: models x (dataset x R@10, R@20, N@10, N@20), mean (and std) over seeds,
  best bold, second underlined (on the displayed, rounded values; ties share the mark),
  REARM's improvement over the best baseline, and a dagger where a per-user Wilcoxon
  signed-rank test says REARM beats that baseline (never from fewer than 3 seeds);
- the ablation table: variants x (dataset x R@20, N@20, change of R@20 against the first
  variant);
- the sensitivity table: sweep points x (dataset x R@20, N@20);
- the efficiency table: seconds per epoch and per evaluation, epochs to the best epoch, peak
  memory and parameter count per model and dataset.

The reported-vs-reproduced table is in :mod:`rearm_dgl.reporting.published`. Each table is
built as a :class:`Table` (values and marks) and rendered by :mod:`rearm_dgl.reporting.render`;
tests check both against the raw ``results.json`` values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rearm_dgl.reporting.frame import RunFrame, RunRecord
from rearm_dgl.reporting.stats import ALPHA, DECIMALS, MIN_SEEDS, Stat, UserTest, ranks, user_test

MAIN_METRICS = ("Recall@10", "Recall@20", "NDCG@10", "NDCG@20")
ABLATION_METRICS = ("Recall@20", "NDCG@20")
REARM = "rearm"
MODEL_LABELS = {"mf": "BPR-MF", "lightgcn": "LightGCN", "vbpr": "VBPR", "freedom": "FREEDOM",
                "rearm": "REARM", "lattice": "LATTICE", "dragon": "DRAGON", "mgcn": "MGCN",
                "bm3": "BM3", "slmrec": "SLMRec", "lgmrec": "LGMRec"}
DAGGER = "\u2020"
#: Label of the main table's last row: REARM's change against the best baseline, in %.
IMPROV = "Improv."
PM = "\u00b1"


def short(metric: str) -> str:
    """``Recall@20`` -> ``R@20``, ``NDCG@10`` -> ``N@10``."""
    name, _, k = metric.partition("@")
    head = {"Recall": "R", "NDCG": "N", "Precision": "P"}.get(name, name)
    return f"{head}@{k}"


def model_label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


def dataset_title(name: str) -> str:
    return name[:1].upper() + name[1:]


@dataclass
class TCell:
    """One table cell: its value(s) and marks.

    A cell with a :class:`Stat` is rendered as its mean (and std, depending on the
    renderer's ``std`` option); other cells show ``text``.
    """

    text: str
    value: float = math.nan
    stat: Stat | None = None
    bold: bool = False
    underline: bool = False
    dagger: bool = False


@dataclass
class Table:
    """A table before rendering.

    Attributes:
        key: File-friendly id (``main-<experiment>``).
        title: Heading above the table.
        caption: Caption lines (the test, n and the marks are explained here).
        corner: Header of the row-label column.
        groups: ``(group label, column labels)``; a label of ``""`` draws no group header.
        rows: ``(row label, cells)``; cells run over all columns of all groups.
        footer: Extra rows after a rule (the improvement row).
        notes: Lines printed under the table in Markdown (p-values, run counts).
        wide: Spans both columns of a two-column paper (LaTeX ``table*``).
        colspec: LaTeX column types of the cells (default: ``r`` under a group label, ``l``
            otherwise); a ``p{..}`` entry wraps long text.
        rules: Row indices before which LaTeX draws a ``\\midrule`` (row blocks).
    """

    key: str
    title: str
    caption: list[str]
    corner: str
    groups: list[tuple[str, list[str]]]
    rows: list[tuple[str, list[TCell]]]
    footer: list[tuple[str, list[TCell]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    wide: bool = False
    colspec: list[str] | None = None
    rules: list[int] = field(default_factory=list)

    def column(self, group: str, label: str) -> int:
        """Index of a column among all cells of a row."""
        i = 0
        for g, cols in self.groups:
            for c in cols:
                if g == group and c == label:
                    return i
                i += 1
        raise KeyError((group, label))

    def cell(self, row: str, group: str, label: str) -> TCell:
        cells = dict(self.rows + self.footer)[row]
        return cells[self.column(group, label)]


def fmt_stat(stat: Stat) -> str:
    """``mean ± std`` (``mean`` alone for one seed), as the Markdown tables show it."""
    return (f"{stat.mean:.{DECIMALS}f}" if stat.n == 1
            else f"{stat.mean:.{DECIMALS}f} {PM} {stat.std:.{DECIMALS}f}")


def _stat_cell(stat: Stat | None) -> TCell:
    return TCell("-") if stat is None else TCell(fmt_stat(stat), stat.mean, stat)


def _stat(frame: RunFrame, metric: str, **cell: Any) -> Stat | None:
    by_seed = frame.values(metric, **cell)
    return Stat.of(by_seed) if by_seed else None


def _mark_ranks(rows: list[list[TCell]], n_cols: int, skip: set[int] = frozenset()) -> None:
    for j in range(n_cols):
        if j in skip:
            continue
        col = [rows[i][j].value for i in range(len(rows))]
        for i, rank in enumerate(ranks(col)):
            rows[i][j].bold = rank == 1
            rows[i][j].underline = rank == 2


def _seed_note(records: list[RunRecord]) -> tuple[str, list[int]]:
    per_group: dict[tuple, set[int]] = {}
    for r in records:
        per_group.setdefault(r.group, set()).add(r.seed)
    counts = sorted({len(s) for s in per_group.values()})
    seeds = sorted(set().union(*per_group.values())) if per_group else []
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return n, seeds


def _span(values: list[int]) -> str:
    values = sorted(set(values))
    if not values:
        return "0"
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def _per_user(records: list[RunRecord], metric: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """seed -> (users, per-user values) of ``metric`` for runs that saved them."""
    out = {}
    for r in records:
        if r.n_test_users == 0:
            continue
        users, arrays = r.per_user()
        if metric in arrays:
            out[r.seed] = (users, arrays[metric])
    return out


def _fmt_p(p: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.3g}"


# ---------------------------------------------------------------------------------------
# Main table


def main_table(frame: RunFrame, experiment: str, metrics=MAIN_METRICS) -> Table:
    """Models x datasets table of one comparison experiment."""
    recs = frame.select(experiment=experiment)
    datasets = frame.ordered(experiment, "dataset")
    models = frame.ordered(experiment, "model")
    stats: dict[tuple[str, str, str], Stat | None] = {
        (m, d, metric): _stat(frame, metric, experiment=experiment, model=m, dataset=d)
        for m in models for d in datasets for metric in metrics}
    rows = [[_stat_cell(stats[(m, d, metric)]) for d in datasets for metric in metrics]
            for m in models]
    _mark_ranks(rows, len(datasets) * len(metrics))

    footer: list[tuple[str, list[TCell]]] = []
    notes: list[str] = []
    tests: dict[tuple[str, str], tuple[str, UserTest]] = {}
    baselines = [m for m in models if m != REARM]
    if REARM in models and baselines:
        imp_cells = []
        for d in datasets:
            ours_runs = [r for r in recs if r.model == REARM and r.dataset == d]
            for metric in metrics:
                ours = stats[(REARM, d, metric)]
                cands = [(stats[(b, d, metric)], b) for b in baselines
                         if stats[(b, d, metric)] is not None]
                if ours is None or not cands:
                    imp_cells.append(TCell("-"))
                    continue
                best, best_name = max(cands, key=lambda t: t[0].mean)
                imp = ((ours.mean - best.mean) / best.mean * 100 if best.mean > 0
                       else math.nan)
                imp_cells.append(TCell("-" if math.isnan(imp) else f"{imp:+.2f}%", imp))
                base_runs = [r for r in recs if r.model == best_name and r.dataset == d]
                test = user_test(_per_user(ours_runs, metric), _per_user(base_runs, metric))
                tests[(d, metric)] = (best_name, test)
                if test.a_better():
                    rows[models.index(REARM)][len(imp_cells) - 1].dagger = True
                why = test.note or (f"only {test.n_seeds} paired seeds, no mark below "
                                    f"{MIN_SEEDS}" if test.n_seeds < MIN_SEEDS else "")
                notes.append(
                    f"{dataset_title(d)} {short(metric)}: REARM vs best baseline "
                    f"{model_label(best_name)}: Wilcoxon p = {_fmt_p(test.wilcoxon_p)}, "
                    f"paired t-test over users p = {_fmt_p(test.ttest_p)}, "
                    f"n = {test.n_users} users, {test.n_seeds} seeds" + (f" ({why})" if why
                                                                          else ""))
        footer.append((IMPROV, imp_cells))

    n, seeds = _seed_note(recs)
    caption = [
        f"Test metrics: mean {PM} sample std (ddof=1) over n = {n} seeds "
        f"({', '.join(map(str, seeds))}); best per column in bold, second underlined "
        f"(compared at {DECIMALS} decimals, ties share the mark).",
    ]
    if footer:
        caption.append(f"{IMPROV}: change of REARM's mean against the best baseline of the "
                       f"column, in %.")
    if tests and not any(t.n_users for _, t in tests.values()):
        caption.append("No significance marks: the runs have no per_user_test.npz.")
    elif tests:
        users = _span([t.n_users for _, t in tests.values()])
        n_seeds = _span([t.n_seeds for _, t in tests.values()])
        caption.append(
            f"{DAGGER} REARM beats the best baseline of the column: two-sided Wilcoxon "
            f"signed-rank test over n = {users} test users (scipy.stats.wilcoxon; each user's "
            f"metric averaged over the {n_seeds} common seeds), p < {ALPHA}; no mark from "
            f"fewer than {MIN_SEEDS} seeds.")
    notes_runs = [f"{len(recs)} runs of experiment {experiment}; their directories are "
                  f"listed in index.md."]
    return Table(
        key=f"main-{experiment}", title=f"Main results ({experiment})", caption=caption,
        corner="Model",
        groups=[(dataset_title(d), [short(m) for m in metrics]) for d in datasets],
        rows=[(model_label(m), cells) for m, cells in zip(models, rows)],
        footer=footer, notes=notes + notes_runs, wide=len(datasets) > 1,
        meta={"models": models, "datasets": datasets, "metrics": list(metrics),
              "tests": tests, "stats": stats})


# ---------------------------------------------------------------------------------------
# Ablation and sensitivity


def ablation_table(frame: RunFrame, experiment: str, metrics=ABLATION_METRICS) -> Table:
    """Variants x datasets table of one ablation experiment (first variant = reference)."""
    recs = frame.select(experiment=experiment)
    datasets = frame.ordered(experiment, "dataset")
    variants = frame.ordered(experiment, "variant")
    models = frame.ordered(experiment, "model")
    row_keys = [(m, v) for m in models for v in variants
                if any(r.model == m and r.variant == v for r in recs)]
    labels = {r.variant: r.label for r in recs}
    ref_metric = metrics[0]
    rows, stats = [], {}
    for m, v in row_keys:
        cells = []
        for d in datasets:
            for metric in metrics:
                s = _stat(frame, metric, experiment=experiment, model=m, variant=v, dataset=d)
                stats[(m, v, d, metric)] = s
                cells.append(_stat_cell(s))
            cells.append(TCell("-"))  # change vs reference, filled below
        rows.append(cells)
    width = len(metrics) + 1
    for i, (m, v) in enumerate(row_keys):
        ref_key = next((k for k in row_keys if k[0] == m), None)
        for j, d in enumerate(datasets):
            ref = stats.get((*ref_key, d, ref_metric)) if ref_key else None
            cur = stats.get((m, v, d, ref_metric))
            if ref is not None and cur is not None and ref.mean > 0:
                delta = (cur.mean - ref.mean) / ref.mean * 100
                rows[i][j * width + len(metrics)] = TCell(f"{delta:+.2f}%", delta)
    skip = {j * width + len(metrics) for j in range(len(datasets))}
    _mark_ranks(rows, len(datasets) * width, skip)
    n, seeds = _seed_note(recs)
    ref_label = labels.get(variants[0], variants[0]) if variants else ""
    caption = [f"Ablation: test metrics, mean {PM} sample std over n = {n} seeds "
               f"({', '.join(map(str, seeds))}); best per column in bold, second underlined; "
               f"Δ {short(ref_metric)} is the relative change of the mean against "
               f"{ref_label!s}."]
    one_model = len(models) == 1
    row_labels = [labels.get(v, v) if one_model else f"{model_label(m)} {labels.get(v, v)}"
                  for m, v in row_keys]
    return Table(
        key=f"ablation-{experiment}", title=f"Ablation ({experiment})", caption=caption,
        corner="Variant",
        groups=[(dataset_title(d), [short(x) for x in metrics] + [f"Δ {short(ref_metric)}"])
                for d in datasets],
        rows=list(zip(row_labels, rows)), wide=len(datasets) > 1,
        notes=[f"{len(recs)} runs of experiment {experiment}; their directories are listed "
               f"in index.md."],
        meta={"rows": row_keys, "datasets": datasets, "stats": stats, "metrics": list(metrics)})


def sensitivity_table(frame: RunFrame, experiment: str, metrics=ABLATION_METRICS) -> Table:
    """Sweep points x datasets table of one sweep experiment.

    Each swept parameter gets its own column, named in words (``user kNN size``); with one
    model the first parameter is the row label.
    """
    from rearm_dgl.reporting.figures import param_label

    recs = frame.select(experiment=experiment)
    datasets = frame.ordered(experiment, "dataset")
    variants = frame.ordered(experiment, "variant")
    models = frame.ordered(experiment, "model")
    keys = list(dict.fromkeys(k for r in recs for k in r.sweep))
    one_model = len(models) == 1 and bool(keys)
    extra = keys[1:] if one_model else keys
    rows, labels = [], []
    for m in models:
        for v in variants:
            sel = [r for r in recs if r.model == m and r.variant == v]
            if not sel:
                continue
            point = sel[0].sweep
            labels.append(str(point.get(keys[0], v)) if one_model else model_label(m))
            rows.append([TCell(str(point.get(k, "-"))) for k in extra]
                        + [_stat_cell(_stat(frame, metric, experiment=experiment, model=m,
                                            variant=v, dataset=d))
                           for d in datasets for metric in metrics])
    n_extra = len(extra)
    _mark_ranks(rows, n_extra + len(datasets) * len(metrics), skip=set(range(n_extra)))
    n, seeds = _seed_note(recs)
    corner = param_label(keys[0], words_only=True) if one_model else "Model"
    groups = ([("", [param_label(k, words_only=True) for k in extra])] if extra else [])
    return Table(
        key=f"sensitivity-{experiment}", title=f"Sensitivity ({experiment})",
        caption=[f"Sensitivity of {', '.join(model_label(m) for m in models)}: test metrics, "
                 f"mean {PM} sample std over n = {n} seeds ({', '.join(map(str, seeds))}); "
                 f"best per column in bold, second underlined."],
        corner=corner,
        groups=groups + [(dataset_title(d), [short(x) for x in metrics]) for d in datasets],
        rows=list(zip(labels, rows)), wide=len(datasets) > 1,
        colspec=["r"] * (n_extra + len(datasets) * len(metrics)),
        notes=[f"{len(recs)} runs of experiment {experiment}; their directories are listed "
               f"in index.md."])


# ---------------------------------------------------------------------------------------
# Efficiency


def _gib(values) -> str:
    return "-" if values.isna().all() else f"{values.max() / 2**30:.2f}"


def efficiency_table(frame: RunFrame) -> Table:
    """Cost per model and dataset from the runs' ``"efficiency"`` records.

    Uses the comparison experiments' runs (every run when there is none). Times are medians
    over seeds of each run's median, memory the maximum over seeds, epochs to the best epoch
    the mean over seeds. Runs written before the efficiency record existed show ``-``.
    """
    df = frame.df
    comparisons = frame.experiment_names("comparison")
    sub = df[df["experiment"].isin(comparisons)] if comparisons else df
    rows = []
    missing = 0
    for (model, dataset), g in sub.groupby(["model", "dataset"], sort=False):
        has = g["epoch_seconds"].notna() | g["n_parameters"].notna()
        missing += int((~has).sum())

        def med(col: str, fmt: str = ".2f", g=g) -> str:
            vals = g[col].dropna().astype(float)
            return "-" if vals.empty else f"{vals.median():{fmt}}"

        best = g["best_epoch"].dropna().astype(float)
        params = g["n_parameters"].dropna()
        rows.append((model_label(model), [
            TCell(dataset_title(dataset)), TCell(med("epoch_seconds")),
            TCell(med("eval_seconds")), TCell("-" if best.empty else f"{best.mean():.1f}"),
            TCell(_gib(g["peak_rss_bytes"].astype("Float64"))),
            TCell(_gib(g["peak_gpu_bytes"].astype("Float64"))),
            TCell("-" if params.empty else f"{int(params.max()):,}")]))
    devices = sorted({str(r.env.get("device_name") or r.env.get("device") or "")
                      for r in frame.records if r.experiment in comparisons or not comparisons}
                     - {""})
    caption = ["Cost per model and dataset: seconds per training epoch and per validation "
               "evaluation (median over seeds of each run's median), epochs to the best "
               "validation epoch (mean over seeds), peak resident memory and peak GPU memory "
               "in GiB (maximum over seeds; - without a GPU), trainable parameters."]
    if devices:
        caption.append(f"Measured on: {', '.join(devices)}.")
    notes = []
    if missing:
        notes.append(f"{missing} run(s) have no efficiency record in results.json (written "
                     f"before it existed): their cost columns show -.")
    return Table(
        key="efficiency", title="Efficiency", caption=caption, corner="Model",
        groups=[("", ["Dataset", "s/epoch", "s/eval", "Epochs to best", "Peak RSS (GiB)",
                      "Peak GPU (GiB)", "Parameters"])],
        rows=rows, notes=notes, wide=True, colspec=["l"] + ["r"] * 6)


__all__ = ["ABLATION_METRICS", "MAIN_METRICS", "TCell", "Table", "ablation_table",
           "dataset_title", "efficiency_table", "fmt_stat", "main_table", "model_label",
           "sensitivity_table", "short"]
