"""Paper-style tables (Markdown and booktabs LaTeX) computed from a :class:`RunFrame`.

- the main table: models x (dataset x R@10, R@20, N@10, N@20), mean +- std over seeds, best
  bold, second underlined, REARM's improvement over the best baseline, and a dagger where a
  paired t-test over seeds says REARM beats that baseline;
- the ablation table: variants x (dataset x R@20, N@20, change of R@20 against the first
  variant);
- the sensitivity table: sweep points x (dataset x R@20, N@20);
- reported vs reproduced: the paper's published numbers beside ours, with what differs.

Each table is first built as a :class:`Table` (values and marks), then rendered; tests check
the :class:`Table` and the rendered text against the raw ``results.json`` values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rearm_dgl.reporting.frame import RunFrame, RunRecord
from rearm_dgl.reporting.paper import PAPER_RESULTS, PAPER_SOURCE
from rearm_dgl.reporting.stats import ALPHA, PairedTest, Stat, paired_test, ranks

MAIN_METRICS = ("Recall@10", "Recall@20", "NDCG@10", "NDCG@20")
ABLATION_METRICS = ("Recall@20", "NDCG@20")
REARM = "rearm"
MODEL_LABELS = {"mf": "BPR-MF", "lightgcn": "LightGCN", "vbpr": "VBPR", "freedom": "FREEDOM",
                "rearm": "REARM"}
DAGGER = "\u2020"
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
    """One table cell: its value(s) and marks."""

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
    return f"{stat.mean:.4f}" if stat.n == 1 else f"{stat.mean:.4f} {PM} {stat.std:.4f}"


def _stat(records: list[RunRecord], metric: str) -> Stat | None:
    return Stat.of({r.seed: r.metric(metric) for r in records}) if records else None


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


# ---------------------------------------------------------------------------------------
# Main table


def main_table(frame: RunFrame, experiment: str, metrics=MAIN_METRICS) -> Table:
    """Models x datasets table of one comparison experiment."""
    recs = frame.select(experiment=experiment)
    datasets = frame.ordered(experiment, "dataset")
    models = frame.ordered(experiment, "model")
    stats: dict[tuple[str, str, str], Stat | None] = {}
    for m in models:
        for d in datasets:
            runs = [r for r in recs if r.model == m and r.dataset == d]
            for metric in metrics:
                stats[(m, d, metric)] = _stat(runs, metric)
    rows = []
    for m in models:
        cells = []
        for d in datasets:
            for metric in metrics:
                s = stats[(m, d, metric)]
                cells.append(TCell("-") if s is None else TCell(fmt_stat(s), s.mean, s))
        rows.append(cells)
    n_cols = len(datasets) * len(metrics)
    _mark_ranks(rows, n_cols)

    footer: list[tuple[str, list[TCell]]] = []
    notes: list[str] = []
    tests: dict[tuple[str, str], tuple[str, PairedTest]] = {}
    baselines = [m for m in models if m != REARM]
    if REARM in models and baselines:
        imp_cells = []
        for d in datasets:
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
                test = paired_test(ours, best)
                tests[(d, metric)] = (best_name, test)
                if test.a_better(ours, best):
                    rows[models.index(REARM)][len(imp_cells) - 1].dagger = True
                p = "n/a (fewer than 2 paired seeds)" if test.n < 2 else (
                    "n/a (identical pairs)" if math.isnan(test.pvalue) else f"{test.pvalue:.4g}")
                notes.append(f"{dataset_title(d)} {short(metric)}: REARM vs best baseline "
                             f"{model_label(best_name)}: p = {p}, n = {test.n}")
        footer.append(("Improv. over best baseline", imp_cells))

    n, seeds = _seed_note(recs)
    caption = [
        f"Test metrics of experiment {experiment}: mean {PM} sample std (ddof=1) over "
        f"n = {n} seeds ({', '.join(map(str, seeds))}); best per column in bold, second "
        f"underlined.",
    ]
    if tests:
        n_pairs = sorted({t.n for _, t in tests.values()})
        npairs = str(n_pairs[0]) if len(n_pairs) == 1 else f"{n_pairs[0]}-{n_pairs[-1]}"
        caption.append(
            f"{DAGGER} REARM beats the best baseline of the column: two-sided paired t-test "
            f"over seeds (scipy.stats.ttest_rel), p < {ALPHA}, n = {npairs} paired seeds.")
    notes_runs = [f"{len(recs)} runs; their directories are listed in index.md."]
    return Table(
        key=f"main-{experiment}", title=f"Main results ({experiment})", caption=caption,
        corner="Model",
        groups=[(dataset_title(d), [short(m) for m in metrics]) for d in datasets],
        rows=[(model_label(m), cells) for m, cells in zip(models, rows)],
        footer=footer, notes=notes + notes_runs,
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
            runs = [r for r in recs if r.model == m and r.variant == v and r.dataset == d]
            for metric in metrics:
                s = _stat(runs, metric)
                stats[(m, v, d, metric)] = s
                cells.append(TCell("-") if s is None else TCell(fmt_stat(s), s.mean, s))
            cells.append(TCell("-"))  # change vs reference, filled below
        rows.append(cells)
    width = len(metrics) + 1
    for i, (m, _v) in enumerate(row_keys):
        ref_key = next((k for k in row_keys if k[0] == m), None)
        for j, d in enumerate(datasets):
            ref = stats.get((*ref_key, d, ref_metric)) if ref_key else None
            cur = stats.get((m, row_keys[i][1], d, ref_metric))
            if ref is not None and cur is not None and ref.mean > 0:
                delta = (cur.mean - ref.mean) / ref.mean * 100
                rows[i][j * width + len(metrics)] = TCell(f"{delta:+.2f}%", delta)
    skip = {j * width + len(metrics) for j in range(len(datasets))}
    _mark_ranks(rows, len(datasets) * width, skip)
    n, seeds = _seed_note(recs)
    ref_label = labels.get(variants[0], variants[0]) if variants else ""
    caption = [f"Ablation ({experiment}): test metrics, mean {PM} sample std over n = {n} seeds "
               f"({', '.join(map(str, seeds))}); best per column in bold, second underlined; "
               f"Δ {short(ref_metric)} is the relative change against "
               f"{ref_label!s}."]
    one_model = len(models) == 1
    row_labels = [labels.get(v, v) if one_model else f"{model_label(m)} {labels.get(v, v)}"
                  for m, v in row_keys]
    return Table(
        key=f"ablation-{experiment}", title=f"Ablation ({experiment})", caption=caption,
        corner="Variant",
        groups=[(dataset_title(d), [short(x) for x in metrics] + [f"Δ {short(ref_metric)}"])
                for d in datasets],
        rows=list(zip(row_labels, rows)),
        notes=[f"{len(recs)} runs; their directories are listed in index.md."],
        meta={"rows": row_keys, "datasets": datasets, "stats": stats, "metrics": list(metrics)})


def sensitivity_table(frame: RunFrame, experiment: str, metrics=ABLATION_METRICS) -> Table:
    """Sweep points x datasets table of one sweep experiment."""
    recs = frame.select(experiment=experiment)
    datasets = frame.ordered(experiment, "dataset")
    variants = frame.ordered(experiment, "variant")
    models = frame.ordered(experiment, "model")
    rows, labels = [], []
    for m in models:
        for v in variants:
            sel = [r for r in recs if r.model == m and r.variant == v]
            if not sel:
                continue
            point = ", ".join(f"{k} = {val}" for k, val in sel[0].sweep.items()) or v
            labels.append(point if len(models) == 1 else f"{model_label(m)}: {point}")
            cells = []
            for d in datasets:
                s = [r for r in sel if r.dataset == d]
                for metric in metrics:
                    st = _stat(s, metric)
                    cells.append(TCell("-") if st is None else TCell(fmt_stat(st), st.mean, st))
            rows.append(cells)
    _mark_ranks(rows, len(datasets) * len(metrics))
    n, seeds = _seed_note(recs)
    return Table(
        key=f"sensitivity-{experiment}", title=f"Sensitivity ({experiment})",
        caption=[f"Sensitivity ({experiment}): test metrics, mean {PM} sample std over n = {n} "
                 f"seeds ({', '.join(map(str, seeds))}); best per column in bold, second "
                 f"underlined."],
        corner="Setting",
        groups=[(dataset_title(d), [short(x) for x in metrics]) for d in datasets],
        rows=list(zip(labels, rows)),
        notes=[f"{len(recs)} runs; their directories are listed in index.md."])


# ---------------------------------------------------------------------------------------
# Reported vs reproduced


def reproduction_table(frame: RunFrame) -> Table:
    """The paper's published numbers beside ours, and which inputs differ."""
    rows = []
    for dataset, metric, published in PAPER_RESULTS:
        recs = _rearm_reference_runs(frame, dataset)
        if not recs:
            rows.append((dataset_title(dataset), [
                TCell(short(metric)), TCell(f"{published:.4f}"), TCell("not run"), TCell("-"),
                TCell("no REARM run on this dataset is in this report")]))
            continue
        s = Stat.of({r.seed: r.metric(metric) for r in recs})
        delta = (s.mean - published) / published * 100
        rows.append((dataset_title(dataset), [
            TCell(short(metric)), TCell(f"{published:.4f}", published),
            TCell(f"{fmt_stat(s)} (n = {s.n})", s.mean, s), TCell(f"{delta:+.1f}%", delta),
            TCell("; ".join(input_differences(recs)) or "none found")]))
    covered = {d for d, _, _ in PAPER_RESULTS}
    for dataset in _rearm_datasets(frame):
        if dataset in covered:
            continue
        recs = _rearm_reference_runs(frame, dataset)
        s = Stat.of({r.seed: r.metric("Recall@20") for r in recs})
        rows.append((dataset_title(dataset), [
            TCell("R@20"), TCell("not in the paper"), TCell(f"{fmt_stat(s)} (n = {s.n})",
                                                            s.mean, s),
            TCell("-"), TCell("; ".join(input_differences(recs)) or "none found")]))
    return Table(
        key="reproduction", title="Reported vs reproduced (REARM)",
        caption=[f"Published REARM results ({PAPER_SOURCE}) beside this report's REARM runs "
                 f"(test split, mean {PM} sample std over seeds)."],
        corner="Dataset",
        groups=[("", ["Metric", "Paper", "Ours", "Ours vs paper", "Inputs that differ"])],
        rows=rows)


def _rearm_datasets(frame: RunFrame) -> list[str]:
    return list(dict.fromkeys(r.dataset for r in frame.records
                              if r.model == REARM and r.kind == "comparison"))


def _rearm_reference_runs(frame: RunFrame, dataset: str) -> list[RunRecord]:
    """REARM runs of a comparison experiment on ``dataset`` (the first such experiment)."""
    for exp in frame.experiment_names("comparison"):
        recs = frame.select(experiment=exp, model=REARM, dataset=dataset)
        if recs:
            return recs
    return []


def input_differences(recs: list[RunRecord]) -> list[str]:
    """What differs from the paper's setting: stand-in features and changed settings."""
    from rearm_dgl.config import build_config

    out = []
    notes = sorted({r.features_note for r in recs if r.features_note})
    out += [f"features: {n.rstrip('.')}" for n in notes]
    try:
        paper = build_config(model=REARM, dataset=recs[0].dataset).flat()
    except Exception:  # an unknown preset never hides the rest of the report
        return out
    ours = _flat(recs[0].config)
    paper_data = {d for d, _, _ in PAPER_RESULTS} | {"baby"}
    origin = "paper preset" if recs[0].dataset in paper_data else "shipped preset"
    ignore = {"train.seed", "train.device", "eval.batch_size", "train.checkpoint_every"}
    for key in sorted(set(paper) & set(ours)):
        if key.startswith("data.") or key in ignore:
            continue
        if _norm(paper[key]) != _norm(ours[key]):
            out.append(f"{key} = {ours[key]} ({origin}: {paper[key]})")
    stopped = sorted({r.stop_reason for r in recs if r.stop_reason})
    if stopped:
        out.append(f"stop reason: {', '.join(stopped)}")
    return out


def _flat(config: dict) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, body in config.items() if isinstance(body, dict)
            for k, v in body.items()}


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


# ---------------------------------------------------------------------------------------
# Rendering


def _md_cell(c: TCell) -> str:
    text = c.text
    if c.bold:
        text = f"**{text}**"
    elif c.underline:
        text = f"<u>{text}</u>"
    if c.dagger:
        text += DAGGER
    return text.replace("|", "\\|")


def to_markdown(t: Table) -> str:
    """GitHub Markdown: bold ``**x**``, underline ``<u>x</u>``, dagger after the cell."""
    head = [t.corner] + [f"{g} {c}".strip() for g, cols in t.groups for c in cols]
    align = ["---"] + ["--:" if not g == "" else "---" for g, cols in t.groups for _ in cols]
    lines = [f"### {t.title}", "", "| " + " | ".join(head) + " |",
             "|" + "|".join(align) + "|"]
    for label, cells in t.rows + t.footer:
        lines.append("| " + " | ".join([label.replace("|", "\\|")] + [_md_cell(c) for c in cells])
                     + " |")
    for line in t.caption:
        lines += ["", f"*{line}*"]
    if t.notes:
        lines.append("")
        lines += [f"- {n}" for n in t.notes]
    return "\n".join(lines) + "\n"


_TEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
               "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
               "^": r"\textasciicircum{}", PM: r"$\pm$", DAGGER: r"$^\dagger$",
               "Δ": r"$\Delta$", "<": r"$<$", ">": r"$>$"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in text)


def _tex_cell(c: TCell) -> str:
    text = tex_escape(c.text)
    if c.bold:
        text = rf"\textbf{{{text}}}"
    elif c.underline:
        text = rf"\underline{{{text}}}"
    if c.dagger:
        text += r"$^\dagger$"
    return text


def to_latex(t: Table) -> str:
    """A ``table`` environment with booktabs rules (needs ``\\usepackage{booktabs}``)."""
    n_cols = sum(len(cols) for _, cols in t.groups)
    spec = "l" + "".join(("r" * len(cols) if g else "l" * len(cols)) for g, cols in t.groups)
    out = [r"\begin{table}[t]", r"\centering", r"\small",
           rf"\caption{{{tex_escape(' '.join(t.caption))}}}",
           rf"\label{{tab:{t.key}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    if any(g for g, _ in t.groups):
        spans, rules, col = [""], [], 2
        for g, cols in t.groups:
            spans.append(rf"\multicolumn{{{len(cols)}}}{{c}}{{{tex_escape(g)}}}")
            rules.append(rf"\cmidrule(lr){{{col}-{col + len(cols) - 1}}}")
            col += len(cols)
        out.append(" & ".join(spans) + r" \\")
        out.append(" ".join(rules))
    out.append(" & ".join([tex_escape(t.corner)] + [tex_escape(c) for _, cols in t.groups
                                                    for c in cols]) + r" \\")
    out.append(r"\midrule")
    for label, cells in t.rows:
        out.append(" & ".join([tex_escape(label)] + [_tex_cell(c) for c in cells]) + r" \\")
    if t.footer:
        out.append(r"\midrule")
        for label, cells in t.footer:
            out.append(" & ".join([tex_escape(label)] + [_tex_cell(c) for c in cells]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    assert all(len(cells) == n_cols for _, cells in t.rows + t.footer)
    return "\n".join(out) + "\n"


def write_tables(tables: list[Table], out_dir: Path, stem: str, heading: str) -> list[str]:
    """``<stem>.md`` and ``<stem>.tex`` holding ``tables``; returns the file names."""
    md = [f"# {heading}", ""] + [to_markdown(t) for t in tables]
    tex = [f"% {heading}: generated by rearm-dgl report; needs \\usepackage{{booktabs}}", ""]
    tex += [to_latex(t) for t in tables]
    (out_dir / f"{stem}.md").write_text("\n".join(md))
    (out_dir / f"{stem}.tex").write_text("\n".join(tex))
    return [f"{stem}.md", f"{stem}.tex"]


__all__ = ["ABLATION_METRICS", "MAIN_METRICS", "TCell", "Table", "ablation_table",
           "input_differences", "main_table", "model_label", "reproduction_table",
           "sensitivity_table", "short", "tex_escape", "to_latex", "to_markdown",
           "write_tables"]
