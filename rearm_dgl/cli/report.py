"""``rearm-dgl report``: paper-style tables and figures from saved runs."""

from __future__ import annotations

import click


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
def report(runs_dir: str | None, storage: str | None, experiments: tuple[str, ...],
           out: str) -> None:
    """Write results, ablation and sensitivity tables, figures and index.md into OUT.

    Reads run directories only (never trains). Runs whose config or data fingerprint does
    not match their cell are refused with a message; on any error nothing is written.
    """
    from rearm_dgl.reporting import build_report

    if storage:
        from rearm_dgl.reporting.report import report_command
        from rearm_dgl.reporting.stored import build_stored_report
        from rearm_dgl.tuning.storage import describe_url, parse_database_url

        command = report_command(out, None, experiments).replace(
            " --out", f" --storage {describe_url(parse_database_url(storage))} --out", 1)
        result = build_stored_report(out.rstrip("/") or out, storage, experiments,
                                     command=command, echo=click.echo)
    else:
        result = build_report(out.rstrip("/") or out, runs_dir=runs_dir,
                              experiments=experiments, echo=click.echo)
    click.echo(f"report: {len(result.files)} files from {result.n_runs} runs in {result.out}/")
    if result.missing:
        click.echo(f"note: {len(result.missing)} cell(s) have no finished run and are left "
                   f"out; index.md lists them")


__all__ = ["report"]
