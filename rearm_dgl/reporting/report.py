"""``rearm-dgl report``: tables, figures and an index from saved runs, written atomically.

The whole report is built in a temporary folder next to the target and moved into place at
the end, so a failure leaves the previous report (or nothing) behind, never a partial one.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rearm_dgl.errors import DataError
from rearm_dgl.io_utils import atomic_dir, atomic_save
from rearm_dgl.reporting import figures, tables
from rearm_dgl.reporting.frame import RunFrame, RunRecord, results_dataframe
from rearm_dgl.reporting.published import reproduction_tables
from rearm_dgl.reporting.render import STD_MODES, write_tables
from rearm_dgl.reporting.runs import collect_runs

ENV_KEYS = ("python", "torch", "dgl", "numpy", "rearm_dgl", "platform", "device",
            "device_name", "git_commit", "git_dirty")


@dataclass
class ReportResult:
    """Where the report went and what it holds."""

    out: Path
    files: list[str] = field(default_factory=list)
    n_runs: int = 0
    missing: list[Path] = field(default_factory=list)


def report_command(out: str | Path, runs_dir: str | Path | None,
                   experiments: Sequence[str | Path], std: str = "small") -> str:
    """The shell command that regenerates a report."""
    parts = ["rearm-dgl", "report"]
    if runs_dir is not None:
        parts += ["--runs", str(runs_dir)]
    for e in experiments:
        parts += ["--experiment", str(e)]
    if std != "small":
        parts += ["--std", std]
    parts += ["--out", str(out)]
    return shlex.join(parts)


def build_report(out: str | Path, runs_dir: str | Path | None = None,
                 experiments: Sequence[str | Path] = (), command: str | None = None,
                 echo: Callable[[str], None] | None = None, std: str = "small"
                 ) -> ReportResult:
    """Write a report folder from saved runs.

    Args:
        out: The report folder (replaced as a whole when it exists).
        runs_dir: The runs folder (see :func:`~rearm_dgl.reporting.frame.collect_runs`).
        experiments: Experiment files whose cells the report covers; none: every finished
            run under ``runs_dir``.
        command: The regenerating command printed in ``index.md`` (default: rebuilt from
            the arguments).
        echo: Where notes go (and warnings about runs skipped for damaged files).
        std: How the LaTeX tables show standard deviations: ``small`` (after the mean in a
            smaller font), ``inline`` (``mean ± std``) or ``none`` (means only, also in the
            Markdown tables).

    Raises:
        DataError / ConfigError: no runs, a provenance violation or a bad experiment file;
            nothing is written then.
    """
    if std not in STD_MODES:
        raise DataError("--std", f"{std!r} is not one of {', '.join(STD_MODES)}",
                        "pass --std small, inline or none")
    out = Path(out)
    frame = collect_runs(runs_dir, experiments, echo=echo)
    command = command or report_command(out, runs_dir, experiments, std)
    if out.exists() and not out.is_dir():
        raise DataError(out, "exists and is not a folder", "choose another --out")
    with atomic_dir(out) as tmp:
        files = _write_all(frame, tmp, command, [str(e) for e in experiments], std)
    return ReportResult(out=out, files=files, n_runs=len(frame.records), missing=frame.missing)


def write_csvs(frame: RunFrame, out: Path) -> list[str]:
    """``runs.csv`` (one row per run) and ``results.csv`` (one row per cell) from the frame.

    Both come from :attr:`RunFrame.df`, the frame the tables are computed from.
    """
    runs = frame.df
    results = results_dataframe(runs)
    for name, df in (("runs.csv", runs), ("results.csv", results)):
        atomic_save(out / name, lambda tmp, df=df: df.to_csv(tmp, index=False,
                                                              float_format="%.10g"))
    return ["runs.csv", "results.csv"]


def _write_all(frame: RunFrame, out: Path, command: str, experiment_files: list[str],
               std: str = "small") -> list[str]:
    files: list[str] = []
    sections: list[tuple[str, list[str], str]] = []  # (heading, files, description)

    # (experiment kind, table builder, file stem, heading, figure or None, index description)
    kinds = (
        ("comparison", tables.main_table, "results", "Main results", None,
         "models x datasets, mean ± std over seeds, best bold, second underlined, "
         "† per-user Wilcoxon signed-rank test"),
        ("ablation", tables.ablation_table, "ablation", "Ablation", figures.ablation_figure,
         "REARM variants x datasets; the figure shows the change in % from the full model"),
        ("sweep", tables.sensitivity_table, "sensitivity", "Sensitivity",
         figures.sensitivity_figure, "metric vs swept parameter, band ± std"),
    )
    for kind, table, stem, heading, figure, description in kinds:
        names = frame.experiment_names(kind)
        if not names:
            continue
        written = write_tables([table(frame, e) for e in names], out, stem, heading, std)
        if figure is not None:
            written += figure(frame, names, out / stem)
        files += written
        sections.append((heading, written, description))
    comparisons = frame.experiment_names("comparison")

    written = write_tables(reproduction_tables(frame), out, "reproduction",
                           "Reported vs reproduced", std)
    files += written
    sections.append(("Reported vs reproduced", written, "every published number "
                     "(rearm_dgl/reporting/published.csv) beside ours"))

    written = write_tables([tables.efficiency_table(frame)], out, "efficiency", "Efficiency",
                           std)
    files += written
    sections.append(("Efficiency", written, "seconds per epoch and evaluation, epochs to the "
                     "best epoch, peak memory, parameters"))

    # The main-table runs; without a comparison, the first experiment's (one set of lines).
    first = frame.experiment_names()[0]
    curve_recs = ([r for r in frame.records if r.kind == "comparison"]
                  or frame.select(experiment=first))
    written = figures.curves_figure(frame, curve_recs, out / "curves")
    files += written
    sections.append(("Training curves", written, "training loss and validation "
                     "Recall@20 per epoch" + (" of the main-table runs" if comparisons else "")))

    written = write_csvs(frame, out)
    files += written
    sections.append(("Data", written, "one row per run, and one row per cell (mean and std "
                     "over seeds): the numbers behind every table"))

    config_files = _write_configs(frame, out)
    files += config_files
    atomic_save(out / "index.md", lambda tmp: tmp.write_text(
        _index(frame, sections, command, experiment_files)))
    files.insert(0, "index.md")
    return files


def _group_file(key: tuple[str, str, str, str]) -> str:
    exp, dataset, model, variant = key
    return f"configs/{exp}/{dataset}__{model}__{variant}.yaml"


def _write_configs(frame: RunFrame, out: Path) -> list[str]:
    written = []
    for key, runs in frame.groups().items():
        rel = _group_file(key)
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        seeds = ", ".join(str(r.seed) for r in runs)
        head = (f"# {'/'.join(key)}: config of {_show(runs[0].run_dir)}\n"
                f"# the runs differ only in train.seed: {seeds}\n"
                f"# config fingerprint {runs[0].config_fingerprint}, "
                f"data fingerprint {runs[0].data_fingerprint}\n")
        text = head + yaml.safe_dump(runs[0].config, sort_keys=False)
        atomic_save(path, lambda tmp, text=text: tmp.write_text(text))
        written.append(rel)
    return written


def _show(path: Path) -> str:
    """A path relative to the working folder when it lies below it (stable in reports)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _index(frame: RunFrame, sections, command: str, experiment_files: list[str]) -> str:
    lines = ["# rearm-dgl report", "",
             "Generated from saved runs only (no training). Regenerate with:", "",
             "```bash", command, "```", ""]
    if experiment_files:
        lines += ["The runs themselves come from (finished cells are skipped):", "", "```bash"]
        lines += [shlex.join(["rearm-dgl", "experiment", "run", f]) for f in experiment_files]
        lines += ["```", ""]
    notes = sorted({r.features_note for r in frame.records if r.features_note})
    if notes:
        lines += ["**Features.** " + " ".join(f"{n}." if not n.endswith(".") else n
                                              for n in notes), ""]
    lines += ["## Contents", ""]
    for heading, files, desc in sections:
        links = ", ".join(f"[{f}]({f})" for f in files)
        lines.append(f"- **{heading}** ({desc}): {links}")
    for heading, files, _ in sections:
        pngs = [f for f in files if f.endswith(".png")]
        for png in pngs:
            lines += ["", f"### {heading}", "", f"![{heading}]({png})"]
    lines += ["", "## Experiments", ""]
    exps = {e.name: e for e in frame.experiments}
    for name in frame.experiment_names():
        recs = frame.select(experiment=name)
        e = exps.get(name)
        src = next((r.experiment_file for r in recs if r.experiment_file), "")
        lines.append(f"### {name}" + (f" (`{src}`)" if src else ""))
        lines.append("")
        if e is not None and e.description:
            lines.append(f"{e.description}")
            lines.append("")
        lines.append(f"- kind: {recs[0].kind}")
        lines.append(f"- models: {', '.join(frame.ordered(name, 'model'))}")
        lines.append(f"- datasets: {', '.join(frame.ordered(name, 'dataset'))}")
        lines.append(f"- seeds: {', '.join(str(s) for s in sorted({r.seed for r in recs}))}")
        if e is not None:
            if e.set:
                lines.append(f"- set (every cell): `{_inline(e.set)}`")
            if e.variants:
                for v, ov in e.variants.items():
                    lines.append(f"- variant `{v}` ({e.label(v)}): `{_inline(ov) or '{}'}`")
            if e.sweep:
                lines.append(f"- sweep (grid): `{_inline(e.sweep)}`")
        lines.append("")
    lines += ["## Runs behind every number", "",
              "One row per cell (runs that differ only by seed). The exact resolved config of "
              "each cell is in the linked file; each run's own `config.yaml`, `results.json`, "
              "`metrics.jsonl` and `per_user_test.npz` are in its directory.", "",
              "| experiment | dataset | model | variant | seeds | test users | config | "
              "config fingerprint | data fingerprint | run directories |",
              "|---|---|---|---|---|--:|---|---|---|---|"]
    for key, runs in frame.groups().items():
        dirs = "<br>".join(f"`{_show(r.run_dir)}`" for r in runs)
        users = sorted({r.n_test_users for r in runs})
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {runs[0].label or key[3]} | "
            f"{', '.join(str(r.seed) for r in runs)} | {', '.join(map(str, users))} | "
            f"[yaml]({_group_file(key)}) | `{runs[0].config_fingerprint[:12]}` | "
            f"`{runs[0].data_fingerprint[:12]}` | {dirs} |")
    if frame.missing:
        lines += ["", f"**Cells without a finished run ({len(frame.missing)})**, left out of "
                  "every table:", ""]
        lines += [f"- `{_show(p)}`" for p in frame.missing]
    if frame.skipped:
        lines += ["", f"**Runs skipped because their files are damaged ({len(frame.skipped)})**,"
                  " left out of every table:", ""]
        lines += [f"- `{_show(p)}`: {why}" for p, why in frame.skipped]
    lines += ["", "## Environment", "", "| runs | " + " | ".join(ENV_KEYS) + " |",
              "|--:|" + "---|" * len(ENV_KEYS)]
    envs: dict[tuple, int] = {}
    for r in frame.records:
        key = tuple(str(r.env.get(k, "")) for k in ENV_KEYS)
        envs[key] = envs.get(key, 0) + 1
    for key, n in sorted(envs.items()):
        lines.append(f"| {n} | " + " | ".join(key) + " |")
    lines += ["", "## Training summary", "",
              "| experiment | dataset | model | variant | epochs run | best epoch | stop | "
              "wall s (mean) |", "|---|---|---|---|---|---|---|--:|"]
    for key, runs in frame.groups().items():
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {runs[0].label or key[3]} | "
            f"{_values(runs, 'epochs_run')} | {_values(runs, 'best_epoch')} | "
            f"{_values(runs, 'stop_reason')} | {_mean_wall(runs)} |")
    return "\n".join(lines) + "\n"


def _inline(d: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in d.items())


def _values(runs: list[RunRecord], attr: str) -> str:
    return ", ".join(str(getattr(r, attr)) for r in runs)


def _mean_wall(runs: list[RunRecord]) -> str:
    vals = [float(r.wall_seconds) for r in runs if r.wall_seconds is not None]
    return f"{sum(vals) / len(vals):.1f}" if vals else "-"


__all__ = ["ReportResult", "build_report", "report_command"]
