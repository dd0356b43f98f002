"""A tuning worker: runs trials of a study until its budget is covered.

Workers are processes started by :func:`rearm_dgl.workers.run_workers` (``tune --jobs N``)
or the ``tune`` command itself, on one machine or many. The budget counts COMPLETE and
PRUNED trials over all workers; a worker stops starting trials once finished plus running
trials cover it, so the study ends with exactly that many. A trial whose worker died is
failed and queued again: by Optuna's heartbeats on a database, by
:func:`recover_dead_trials` on a journal file.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from rearm_dgl import workers
from rearm_dgl.errors import RearmError
from rearm_dgl.tuning.objective import (
    MAX_DUPLICATES,
    DuplicateTrial,
    FitRunner,
    SurplusTrial,
    WorkerSpec,
    budget_state,
    make_pruner,
    make_sampler,
    objective_factory,
    requeue,
    trial_line,
    worker_seed,
)
from rearm_dgl.tuning.storage import open_storage


def recover_dead_trials(study: optuna.Study, echo: Callable[[str], None] = print) -> list[int]:
    """Fail and re-queue running trials whose worker process on this machine has died.

    Journal files have no heartbeat, so a killed worker's trial would stay RUNNING for ever;
    this does for the journal what heartbeats do for a database (whose stale trials are
    handled by :func:`optuna.storages.fail_stale_trials`, also called here).

    Returns:
        The numbers of the trials failed and re-queued.
    """
    storage = study._storage
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if isinstance(storage, optuna.storages.RDBStorage):
            optuna.storages.fail_stale_trials(study)
            return []
        recovered = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker")
            if not isinstance(worker, dict) or not workers.is_dead(worker):
                continue
            try:
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, KeyError):
                continue  # another process recovered it first
            requeue(study, storage.get_trial(t._trial_id))
            recovered.append(t.number)
            echo(f"trial {t.number}: its worker (pid {worker.get('pid')}) is gone; "
                 f"marked failed and queued again")
    return recovered


def run_worker(spec: WorkerSpec, runner: Callable | None = None,
               echo: Callable[[str], None] = print) -> None:
    """Run trials of a study until its budget (or ``spec.timeout``) is reached.

    Args:
        spec: The study, its storage and settings.
        runner: ``runner(cfg, run_dir, callback, progress) -> FitResult``;
            :class:`FitRunner` if None.
        echo: Where progress lines go.
    """
    # Failed trials are reported by trial_line, with their error, not by Optuna's traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(spec.storage, echo)
    base_epochs = int(spec.base["train"]["epochs"])
    n_trials = len(storage.get_all_trials(storage.get_study_id_from_name(spec.study),
                                          deepcopy=False))
    seed = worker_seed(spec.seed, workers.identity(), n_trials)
    study = optuna.load_study(study_name=spec.study, storage=storage,
                              sampler=make_sampler(seed),
                              pruner=make_pruner(spec.pruner, base_epochs))
    recover_dead_trials(study, echo)
    done, running = budget_state(study)
    if done >= spec.trials:
        return
    if done + len(running) >= spec.trials:
        echo(f"study {spec.study}: {done} trials finished and {len(running)} running cover the "
             f"budget of {spec.trials}; nothing to start")
        return
    runner = runner or FitRunner()
    metric = spec.settings.metric
    duplicates = {"run": 0}

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        echo(trial_line(study, trial, metric))
        duplicates["run"] = duplicates["run"] + 1 if "duplicate_of" in trial.user_attrs else 0
        if duplicates["run"] >= MAX_DUPLICATES:
            echo(f"study {spec.study}: the sampler proposed {MAX_DUPLICATES} points in a row "
                 f"that trials already have; the space looks exhausted, stopping this worker")
            study.stop()
            return
        done, running = budget_state(study)
        if done + len(running) >= spec.trials:
            study.stop()
            return
        failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                  if not t.user_attrs.get("surplus") and "duplicate_of" not in t.user_attrs]
        if len(failed) >= max(spec.trials, 5):
            echo(f"study {spec.study}: {len(failed)} trials failed; stopping this worker "
                 f"(see the trial folders under {Path(spec.studies_dir) / spec.study})")
            study.stop()

    study.optimize(objective_factory(spec, runner, echo), timeout=spec.timeout,
                   callbacks=[after_trial], catch=(SurplusTrial, DuplicateTrial),
                   gc_after_trial=True)


def worker_main(index: int, spec: WorkerSpec) -> None:
    """Entry point of a worker process started by :func:`rearm_dgl.workers.run_workers`."""
    def echo(line: str) -> None:
        print(f"[worker {index}] {line}", flush=True)

    try:
        run_worker(spec, echo=echo)
    except RearmError as exc:
        print(f"[worker {index}] error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
