"""``rearm-dgl tune``: hyperparameter studies with Optuna (see :mod:`rearm_dgl.tuning`)."""

from __future__ import annotations

import click

from rearm_dgl.tuning.objective import PRUNERS


@click.command()
@click.option("--dataset", "-d", default=None, metavar="NAME|PATH",
              help="Dataset to tune on (default: the study's, else demo); its paper preset "
                   "is trial 0.")
@click.option("--model", "-m", default=None, metavar="NAME",
              help="Model to tune (default: the study's, else rearm).")
@click.option("--trials", type=int, default=100, show_default=True,
              help="Completed plus pruned trials the study should have, over all workers.")
@click.option("--study", "study", default=None, metavar="NAME",
              help="Study name and folder under --studies-dir (default: <model>-<dataset>). "
                   "Running the same command again resumes it.")
@click.option("--storage", default=None, metavar="URL",
              help="SQLAlchemy URL shared by workers on several machines, e.g. "
                   "postgresql://user:pass@host:5432/db (default: the journal file "
                   "<studies-dir>/<study>/journal.log).")
@click.option("--space", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Search-space YAML (default: the study's, else the space shipped for the "
                   "model, rearm_dgl/studies/<model>.yaml).")
@click.option("--timeout", type=float, default=None, metavar="SECONDS",
              help="Start no new trial after this many seconds.")
@click.option("--sampler-seed", "seed", type=click.IntRange(0, 2**32 - 1), default=2025,
              show_default=True,
              help="Seed of the TPE sampler; each worker mixes in its host and process id, so "
                   "workers never propose the same points. (Each trial's training seed is "
                   "train.seed; fix it with --set train.seed=N.)")
@click.option("--seed", "old_seed", default=None, hidden=True,
              help="Renamed: --sampler-seed (the sampler) or --set train.seed=N (training).")
@click.option("--pruner", type=click.Choice(PRUNERS), default="median", show_default=True,
              help="Stop unpromising trials early from their per-epoch validation metric.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local worker processes sharing the storage.")
@click.option("--summary", is_flag=True,
              help="Only write the outputs of an existing study (trials.csv, best.yaml, plots, "
                   "TensorBoard) and print its best trial.")
@click.option("--studies-dir", default="studies", show_default=True,
              type=click.Path(file_okay=False), help="Parent folder of study folders.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Fix a config value for every trial, e.g. --set train.epochs=50 "
                   "(repeatable; a fixed key is left out of the search).")
def tune(dataset, model, trials, study, storage, space, timeout, seed, old_seed, pruner, jobs,
         summary, studies_dir, overrides) -> None:
    """Tune a model's hyperparameters with Optuna (TPE sampler, pruning on validation).

    Trial 0 is the paper's preset for the dataset. Each trial is a run folder under
    <studies-dir>/<study>/trials/. At the end the study writes trials.csv, best.yaml (train
    it with `rearm-dgl train --config`), plots/*.png and a TensorBoard hparams view.
    """
    from rearm_dgl import tuning
    from rearm_dgl.workers import Interrupted

    if old_seed is not None:
        # `train --seed` is the training seed; here it would have meant the sampler's.
        raise click.UsageError("tune has no --seed: use --sampler-seed N for the sampler, or "
                               "--set train.seed=N for the training seed of every trial")

    if summary:
        if study is None:
            raise click.UsageError("--summary needs --study NAME")
        result = tuning.summarize(study, storage=storage, studies_dir=studies_dir)
    else:
        try:
            result = tuning.run_study(
                study, model=model, dataset=dataset, space=space, overrides=overrides,
                trials=trials, timeout=timeout, seed=seed, pruner=pruner, jobs=jobs,
                storage=storage, studies_dir=studies_dir, echo=click.echo)
        except Interrupted as exc:
            click.echo(f"interrupted: {exc}", err=True)
            raise SystemExit(130) from None
    click.echo(result.describe())


__all__ = ["tune"]
