"""Running a study: plan (check everything first), create or resume, run, write outputs.

A study tunes one model on one dataset. Trial 0 is the shipped preset for (model,
dataset). :func:`run_study` checks the space, the config, the storage, the database
connection, the dataset and the model's features before the study is created or changed;
then one or more workers (:mod:`rearm_dgl.tuning.worker`) run trials until the budget is
covered, and the outputs (:mod:`rearm_dgl.tuning.outputs`) are written, also when the run
was stopped by SIGTERM or Ctrl-C (the same command resumes it).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from rearm_dgl import workers
from rearm_dgl.config import RunConfig, build_config, field_names, parse_override, with_overrides
from rearm_dgl.errors import ConfigError
from rearm_dgl.models.registry import canonical as canonical_model
from rearm_dgl.tuning.objective import PRUNERS, FitRunner, WorkerSpec
from rearm_dgl.tuning.outputs import StudyResult, summarize
from rearm_dgl.tuning.settings import (
    STUDY_ATTR,
    StudyError,
    StudySettings,
    check_name,
    check_resume,
    study_dir,
)
from rearm_dgl.tuning.space import SearchSpace, default_space, load_space, parse_space
from rearm_dgl.tuning.storage import StorageSpec, existing_study, open_storage, parse_storage
from rearm_dgl.tuning.worker import run_worker, worker_main

#: Seconds a worker joining a new study waits for its creator to store the settings.
SETUP_WAIT = 10
#: What every trial keeps on disk unless --set says otherwise: nothing big.
TRIAL_CHECKPOINTS = {"train.keep_checkpoints": "none"}


def _parse_sets(overrides: Sequence[str]) -> dict[str, Any]:
    return dict(parse_override(text) for text in overrides)


def _full_key(key: str, cfg: RunConfig) -> str:
    if "." in key:
        return key
    hits = [k for k in field_names(cfg) if k.split(".", 1)[1] == key]
    return hits[0] if len(hits) == 1 else key


@dataclass
class _Plan:
    """Everything a run of :func:`run_study` resolved before touching storage."""

    name: str
    storage: StorageSpec
    settings: StudySettings
    base: RunConfig
    space: SearchSpace
    exists: bool
    storage_obj: Any = None


def _plan(name: str | None, *, model: str | None, dataset: str | None,
          space: str | Path | None, overrides: Sequence[str], storage: str | None,
          studies_dir: Path) -> _Plan:
    """Resolve and check a run's settings; reads (never writes) an existing study."""
    model = canonical_model(model) if model else None  # -m BPR is mf, LightGCN is lightgcn
    model_hint = model or "rearm"
    if name is None:
        from rearm_dgl.tracking import dataset_label

        name = f"{model_hint}-{dataset_label(dataset or 'demo')}"
    check_name(name)
    spec = parse_storage(storage, study_dir(studies_dir, name))
    fixed = _parse_sets(overrides)
    storage_obj, exists = existing_study(spec, name)
    stored: StudySettings | None = None
    if exists:
        attrs = optuna.load_study(study_name=name, storage=storage_obj).user_attrs
        if STUDY_ATTR in attrs:
            stored = StudySettings.from_dict(attrs[STUDY_ATTR])

    model = model or (stored.model if stored else "rearm")
    base = build_config(model, dataset or (stored.dataset if stored else None),
                        overrides=[f"{k}={json.dumps(v)}" for k, v in
                                   (fixed or (stored.fixed if stored else {})).items()])
    if not overrides and stored:
        fixed = dict(stored.fixed)
    if space is not None:
        sp = load_space(space, model)
        space_file = str(space)
    elif stored:
        sp = parse_space(stored.space, f"study {name} (stored space)", model)
        space_file = stored.space_file
    else:
        path = default_space(model)
        sp, space_file = load_space(path, model), str(path)
    fixed_keys = {_full_key(k, base) for k in fixed}
    sp = sp.without(sorted(fixed_keys))
    if not sp.params:
        raise ConfigError(f"{space_file}: every searched key is fixed by --set; nothing to "
                          f"tune")
    settings = StudySettings(model, base.data.dataset, sp.to_dict(), fixed, base.eval.metric,
                             space_file)
    if stored:
        check_resume(name, spec.describe(), stored, settings)
    sp.check_against(base)
    sp.preset_params(base)
    # Trials keep nothing big on disk (best.yaml retrains the winner), unless --set says.
    keep = {k: v for k, v in TRIAL_CHECKPOINTS.items() if k not in fixed_keys}
    base = with_overrides(base, keep)
    return _Plan(name, spec, settings, base, sp, exists, storage_obj)


def run_study(
    study: str | None = None,
    *,
    model: str | None = None,
    dataset: str | None = None,
    space: str | Path | None = None,
    overrides: Sequence[str] = (),
    trials: int = 100,
    timeout: float | None = None,
    seed: int = 2025,
    pruner: str = "median",
    jobs: int = 1,
    storage: str | None = None,
    studies_dir: str | Path = "studies",
    runner: Callable | None = None,
    echo: Callable[[str], None] = print,
) -> StudyResult:
    """Create or resume a study, run it to its budget, and write its outputs.

    Everything (space, config, storage URL, database connection, dataset, budget) is checked
    before the study is created or changed.

    Args:
        study: Study name (default ``<model>-<dataset>``); also its folder under
            ``studies_dir``.
        model: Registered model (default: the stored one, else ``rearm``).
        dataset: Dataset name or path (default: the stored one, else ``demo``).
        space: Search-space YAML (default: the stored one, else ``<studies_dir>/<model>.yaml``).
        overrides: ``section.field=value`` values fixed for every trial.
        trials: COMPLETE + PRUNED trials the study should have, over all workers.
        timeout: Stop starting trials after this many seconds (per worker).
        seed: TPE seed; worker k uses ``seed + k``.
        pruner: ``median``, ``hyperband`` or ``none``.
        jobs: Local worker processes sharing the storage.
        storage: SQLAlchemy URL; None for ``studies/<study>/journal.log``.
        studies_dir: Parent folder of study folders.
        runner: Trial runner (tests); :class:`FitRunner` when None.
        echo: Where progress lines go.

    Raises:
        StudyError, ConfigError, DataError: for bad input; the study is left unchanged.
    """
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise StudyError(f"--trials {trials}: the budget must be a positive number of trials")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise StudyError(f"--jobs {jobs}: must be a positive number of worker processes")
    if timeout is not None and timeout <= 0:
        raise StudyError(f"--timeout {timeout}: must be a positive number of seconds")
    if pruner not in PRUNERS:
        raise StudyError(f"--pruner {pruner!r}: choose one of {list(PRUNERS)}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies_dir = Path(studies_dir)
    plan = _plan(study, model=model, dataset=dataset, space=space, overrides=overrides,
                 storage=storage, studies_dir=studies_dir)
    # A bad dataset, or one without the features the model needs, fails here, before the
    # study exists.
    from rearm_dgl.models.base import require_features

    if jobs > 1:
        if runner is not None:
            raise ValueError("run_study: a custom runner needs jobs=1 (workers are processes)")
        from rearm_dgl.data import load_dataset

        require_features(plan.settings.model, load_dataset(plan.base.data))
    else:
        runner = runner or FitRunner()
        if isinstance(runner, FitRunner):
            require_features(plan.settings.model, runner.data(plan.base.data))

    # Checked: now create or resume.
    storage_obj = plan.storage_obj or open_storage(plan.storage, echo)
    _create_or_join(plan, storage_obj)
    echo(f"study {plan.name} ({plan.storage.describe()}): {plan.settings.model} on "
         f"{plan.settings.dataset}, {len(plan.space.params)} searched keys, budget {trials} "
         f"trials, {jobs} worker(s)")
    spec = WorkerSpec(plan.name, plan.storage, plan.settings, plan.base.to_dict(), trials,
                      timeout, seed, pruner, str(studies_dir))
    failures: list[str] = []
    try:
        if jobs == 1:
            previous = workers.interrupt_on_sigterm()
            try:
                run_worker(spec, runner, echo)
            finally:
                workers.restore_sigterm(previous)
        else:
            failures = workers.run_workers(worker_main, [(spec,)] * jobs, name="rearm-tune")
    except KeyboardInterrupt:
        # SIGTERM or Ctrl-C: the running trials were queued again; write what there is.
        summarize(plan.name, storage=storage, studies_dir=studies_dir)
        raise workers.Interrupted(f"study {plan.name} stopped; its outputs are written. Run "
                                  f"the same command again to resume it") from None
    result = summarize(plan.name, storage=storage, studies_dir=studies_dir)
    if failures:
        raise StudyError(f"study {plan.name}: {'; '.join(failures)}; the outputs cover the "
                         f"trials that finished. Rerun the command to resume")
    return result


def _create_or_join(plan: _Plan, storage: Any) -> optuna.Study:
    """Create the study (queueing the preset trial) or join it.

    Creating a study is atomic in every storage, so when several workers start a new study at
    once exactly one creates it. The creator queues the preset trial and only then stores the
    settings; a worker that finds no settings waits for them, and takes over the setup if
    the creator died before finishing it. A preset trial that failed (say, the data was
    broken) is queued again.
    """
    try:
        st = optuna.create_study(study_name=plan.name, storage=storage, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        st = optuna.load_study(study_name=plan.name, storage=storage)
        deadline = time.monotonic() + SETUP_WAIT
        while STUDY_ATTR not in st.user_attrs and time.monotonic() < deadline:
            time.sleep(0.2)
        if STUDY_ATTR in st.user_attrs:
            check_resume(plan.name, plan.storage.describe(),
                         StudySettings.from_dict(st.user_attrs[STUDY_ATTR]), plan.settings)
            _queue_preset(st, plan)
            return st
    _queue_preset(st, plan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        st.set_metric_names([f"valid {plan.settings.metric}"])
    st.set_user_attr(STUDY_ATTR, plan.settings.to_dict())
    return st


def _queue_preset(st: optuna.Study, plan: _Plan) -> None:
    """Queue the preset trial unless one is waiting, running or finished."""
    live = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
    if any(t.user_attrs.get("preset") and t.state in live
           for t in st.get_trials(deepcopy=False)):
        return
    st.enqueue_trial(plan.space.preset_params(plan.base), user_attrs={"preset": True})
