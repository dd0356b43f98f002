"""``rearm-dgl report``: paper-style tables and figures from saved runs."""

from __future__ import annotations

import click

from rearm_dgl.reporting.render import STD_MODES


@click.command("report")
@click.option("--runs-dir", "--runs", "runs_dir", type=click.Path(file_okay=False),
              default=None,
              help="Runs folder (default: the experiment files' runs_dir, else runs).")
@click.option("--storage", default=None, metavar="URL",
              help="Read the runs that `experiment run --storage URL` recorded in this "
                   "database instead of run folders (needs --experiment).")
@click.option("--experiment", "experiments", multiple=True,
              type=click.Path(dir_okay=False), help="Experiment file whose cells to report "
              "(repeatable); without it every finished run under --runs is reported.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Report folder, e.g. reports/<name>/ (replaced as a whole).")
@click.option("--std", type=click.Choice(STD_MODES), default="small", show_default=True,
              help="Standard deviations in the LaTeX tables: small (after the mean, in a "
              "smaller font), inline (mean ± std) or none (means only, as REARM's and "
              "MMRec's tables).")
def report(runs_dir: str | None, storage: str | None, experiments: tuple[str, ...],
           out: str, std: str) -> None:
    """Write results, ablation, sensitivity, efficiency and reproduction tables (Markdown
    and LaTeX), figures (PNG and PDF), runs.csv, results.csv and index.md into OUT.

    Reads run directories only (never trains). Runs whose config or data fingerprint does
    not match their cell are refused with a message; runs with damaged files are skipped
    with a warning; on any error nothing is written.
    """
    from rearm_dgl.reporting import build_report

    if storage:
        from rearm_dgl.reporting.report import report_command
        from rearm_dgl.reporting.stored import build_stored_report
        from rearm_dgl.tuning.storage import describe_url, parse_database_url

        command = report_command(out, None, experiments, std=std).replace(
            " --out", f" --storage {describe_url(parse_database_url(storage))} --out", 1)
        result = build_stored_report(out.rstrip("/") or out, storage, experiments,
                                     command=command, echo=click.echo, std=std)
    else:
        result = build_report(out.rstrip("/") or out, runs_dir=runs_dir,
                              experiments=experiments, echo=click.echo, std=std)
    click.echo(f"report: {len(result.files)} files from {result.n_runs} runs in {result.out}/")
    if result.missing:
        click.echo(f"note: {len(result.missing)} cell(s) have no finished run and are left "
                   f"out; index.md lists them")


__all__ = ["report"]
