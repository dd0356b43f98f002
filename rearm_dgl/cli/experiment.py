"""``rearm-dgl experiment run|status FILE``: run the missing cells of an experiment file."""

from __future__ import annotations

import click

_FILE_HELP = ("FILE is an experiment YAML file; a name such as main_tiny.yaml that is not a "
              "file here is the one shipped with the package.")


def _runs_dir_option(f):
    return click.option("--runs-dir", "runs_dir", type=click.Path(file_okay=False), default=None,
                        help="Runs folder (default: the file's runs_dir, else runs).")(f)


def _storage_option(f):
    return click.option(
        "--storage", default=None, metavar="URL",
        help="Database shared by workers on many machines, e.g. "
             "postgresql://user:pass@host:5432/db: cells are claimed and their results "
             "recorded there. Every worker of one experiment uses the same URL (default: "
             "this machine only, no server).")(f)


@click.group("experiment")
def experiment() -> None:
    """Experiment files: models x datasets x variants x seeds (see rearm_dgl/studies/)."""


@experiment.command("run", epilog=_FILE_HELP)
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes on this machine; each runs one cell at a time.")
@_runs_dir_option
@_storage_option
def run(file: str, jobs: int, runs_dir: str | None, storage: str | None) -> None:
    """Run every cell of FILE that is not done; finished cells are never redone.

    Any number of processes, on one machine or (with --storage) many, may run one FILE at
    once: each cell is claimed by exactly one. An interrupted cell resumes from its
    checkpoint; a failed cell is retried. Exit code 1 when a cell fails (its error is in
    error.json in its run folder), 130 when stopped by SIGTERM or Ctrl-C.
    """
    from rearm_dgl.experiments import run_experiment
    from rearm_dgl.workers import Interrupted

    try:
        summary = run_experiment(file, jobs=jobs, runs_dir=runs_dir, storage=storage,
                                 echo=click.echo)
    except Interrupted:
        click.echo("interrupted: the running cells stopped where the same command resumes "
                   "them", err=True)
        raise SystemExit(130) from None
    click.echo(summary.text())
    if summary.failed:
        raise SystemExit(1)


@experiment.command("status", epilog=_FILE_HELP)
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@_runs_dir_option
@_storage_option
@click.option("--no-data-check", is_flag=True,
              help="Do not load the datasets to compare data fingerprints (faster).")
def status(file: str, runs_dir: str | None, storage: str | None, no_data_check: bool) -> None:
    """Show a grid of done, running, failed and missing cells of FILE."""
    from rearm_dgl.experiments import (
        experiment_status,
        format_status,
        load_experiment,
        open_store,
    )

    exp = load_experiment(file, runs_dir)
    store = open_store(exp, storage)
    try:
        if storage:
            store.check_same_cells(create=False)
        click.echo(format_status(exp, experiment_status(exp, check_data=not no_data_check,
                                                        store=store)))
    finally:
        store.close()


__all__ = ["experiment"]
