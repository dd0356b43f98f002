"""``rearm-dgl experiment run|status FILE``: run the missing cells of an experiment file."""

from __future__ import annotations

import click


@click.group("experiment")
def experiment() -> None:
    """Experiment files: models x datasets x variants x seeds (see studies/*.yaml)."""


@experiment.command("run")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes; each runs one cell at a time.")
@click.option("--runs", "runs_dir", type=click.Path(file_okay=False), default=None,
              help="Runs folder (default: the file's runs_dir, else runs).")
def run(file: str, jobs: int, runs_dir: str | None) -> None:
    """Run every cell of FILE that is not done; finished cells are never redone.

    An interrupted cell resumes from its checkpoint; a failed cell is retried. Exit code 1
    when a cell fails (its error is in error.json in its run folder).
    """
    from rearm_dgl.experiments import run_experiment

    summary = run_experiment(file, jobs=jobs, runs_dir=runs_dir, echo=click.echo)
    click.echo(summary.text())
    if summary.failed:
        raise SystemExit(1)


@experiment.command("status")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--runs", "runs_dir", type=click.Path(file_okay=False), default=None,
              help="Runs folder (default: the file's runs_dir, else runs).")
@click.option("--no-data-check", is_flag=True,
              help="Do not load the datasets to compare data fingerprints (faster).")
def status(file: str, runs_dir: str | None, no_data_check: bool) -> None:
    """Show a grid of done, running, failed and missing cells of FILE."""
    from rearm_dgl.experiments import experiment_status, format_status, load_experiment

    exp = load_experiment(file, runs_dir)
    click.echo(format_status(exp, experiment_status(exp, check_data=not no_data_check)))


__all__ = ["experiment"]
