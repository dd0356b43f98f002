"""One trial = one fit: the objective, its runner, the sampler and the pruner.

Each trial is a normal run directory, ``studies/<study>/trials/<number>/``; it reports the
validation metric (``eval.metric``, Recall@20) every epoch for pruning and returns its best
value. Test metrics are stored as user attributes only. Trials keep no checkpoint by
default (``train.keep_checkpoints: none``): ``best.yaml`` retrains the winner.
"""

from __future__ import annotations

import math
import shutil
import signal
import socket
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from rearm_dgl import workers
from rearm_dgl.config import DataConfig, GraphConfig, RunConfig, config_from_dict, with_overrides
from rearm_dgl.tuning.settings import TRIALS_DIR, StudySettings, study_dir
from rearm_dgl.tuning.space import SearchSpace, parse_space
from rearm_dgl.tuning.storage import MAX_RETRY, StorageSpec

PRUNERS = ("median", "hyperband", "none")
#: Epochs every trial runs before the median pruner may stop it.
MEDIAN_WARMUP_EPOCHS = 10
MEDIAN_STARTUP_TRIALS = 5
#: A worker whose sampler proposes this many finished points in a row stops: the space is
#: exhausted.
MAX_DUPLICATES = 20

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker process needs (picklable, for spawned processes)."""

    study: str
    storage: StorageSpec
    settings: StudySettings
    base: dict[str, Any]
    trials: int
    timeout: float | None
    seed: int
    pruner: str
    studies_dir: str


def make_pruner(kind: str, epochs: int) -> optuna.pruners.BasePruner:
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS,
                                           n_warmup_steps=min(MEDIAN_WARMUP_EPOCHS, epochs - 1))
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1),
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


def worker_seed(seed: int, worker: Mapping[str, Any], n_trials: int) -> int:
    """The sampler seed of one worker: the study seed mixed with the worker's host and
    process and the number of trials the study had when it started, so workers started by
    the same command, and a resumed study, never draw the same points."""
    parts = [seed, zlib.crc32(str(worker.get("host", "")).encode()), int(worker.get("pid", 0)),
             zlib.crc32(str(worker.get("start", "")).encode()), n_trials]
    return int(np.random.SeedSequence(parts).generate_state(1)[0])


def make_sampler(seed: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constant_liar keeps parallel workers from proposing the same point.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


class FitRunner:
    """Runs one trial with :func:`rearm_dgl.train.fit`, reusing data and graph across trials.

    The dataset is loaded once per process; the relation graph is kept for the last graph
    settings (other settings come from the on-disk graph cache, which is keyed on them).
    """

    def __init__(self, data: Any = None):
        self._data = data
        self._graph_key: GraphConfig | None = None
        self._graph: Any = None

    def data(self, cfg: DataConfig) -> Any:
        if self._data is None:
            from rearm_dgl.data import load_dataset

            self._data = load_dataset(cfg)
        return self._data

    def graph(self, cfg: RunConfig, data: Any) -> Any:
        from rearm_dgl.models import registry

        if not getattr(registry.get(cfg.model), "needs_graph", True):
            return None
        if self._graph_key != cfg.graph:
            from rearm_dgl.graphs import load_or_build_graph

            self._graph, self._graph_key = None, None  # free the old graph first
            self._graph = load_or_build_graph(data, cfg.graph)
            self._graph_key = cfg.graph
        return self._graph

    def __call__(self, cfg: RunConfig, run_dir: Path,
                 callback: Callable[[int, dict[str, float]], None],
                 progress: Callable[[str], None] | None = None) -> Any:
        from rearm_dgl.train import fit

        data = self.data(cfg.data)
        return fit(cfg, run_dir=run_dir, data=data, graph=self.graph(cfg, data),
                   callbacks=(callback,), quiet=True, progress=progress)


class SurplusTrial(Exception):
    """Raised in a trial started after the budget was already covered (a race between workers)."""


class DuplicateTrial(Exception):
    """Raised in a trial whose proposed point a finished or running trial already has."""


def budget_state(study: optuna.Study) -> tuple[int, list[FrozenTrial]]:
    """(finished trials, running trials) of ``study``."""
    trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    done = sum(t.state in FINISHED for t in trials)
    return done, [t for t in trials if t.state == TrialState.RUNNING]


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a failed trial's parameters again (as Optuna's retry callback does for
    databases), at most MAX_RETRY times per original trial."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > MAX_RETRY:
        return
    keep = {k: v for k, v in trial.user_attrs.items() if k == "preset"}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs=keep,
        system_attrs={"failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                      "retry_history": history}))


def _same_point(study: optuna.Study, number: int, params: Mapping[str, Any],
                space: SearchSpace) -> int | None:
    """The number of a finished or running trial (not ``number``) with the point ``params``."""
    specs = {p.key: p for p in space.params}
    want = {k: specs[k].rounded(v) if k in specs else v for k, v in params.items()}
    for t in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)):
        if t.number == number or set(t.params) != set(want):
            continue
        if all(repr(specs[k].rounded(v) if k in specs else v) == repr(want[k])
               for k, v in t.params.items()):
            return t.number
    return None


def objective_factory(spec: WorkerSpec, runner: Callable,
                      echo: Callable[[str], None]) -> Callable[[optuna.trial.Trial], float]:
    """The objective of one worker: budget check, suggest, fit, record."""
    base = config_from_dict(spec.base)
    space = parse_space(spec.settings.space, spec.settings.space_file, spec.settings.model)
    metric = spec.settings.metric
    trials_dir = (study_dir(spec.studies_dir, spec.study) / TRIALS_DIR).resolve()
    me_worker = workers.identity()

    def objective(trial: optuna.trial.Trial) -> float:
        done, running = budget_state(trial.study)
        me = next((t for t in running if t.number == trial.number), None)
        order = (me.datetime_start, trial.number) if me else None
        earlier = [t for t in running if t.number != trial.number and order is not None
                   and (t.datetime_start, t.number) < order]
        if done + len(earlier) >= spec.trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number}: the budget of {spec.trials} trials was "
                               f"already covered when it started")
        trial.set_user_attr("worker", me_worker)
        params = space.suggest(trial)
        twin = _same_point(trial.study, trial.number, trial.params, space)
        if twin is not None:
            trial.set_user_attr("duplicate_of", twin)
            raise DuplicateTrial(f"trial {trial.number}: trial {twin} already has this point")
        cfg = with_overrides(base, params)
        run_dir = trials_dir / str(trial.number)
        if run_dir.exists():  # left by an earlier study of the same name
            shutil.rmtree(run_dir)
        from rearm_dgl.tracking import config_fingerprint

        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("config", cfg.to_dict())
        trial.set_user_attr("config_fingerprint", config_fingerprint(cfg))
        best = {"value": -math.inf, "epoch": 0}

        def report(epoch: int, valid: Mapping[str, float]) -> None:
            value = float(valid[metric])
            if value > best["value"]:
                best.update(value=value, epoch=epoch)
            trial.report(value, epoch)
            if trial.should_prune():
                trial.set_user_attr(f"valid.{metric}", best["value"])
                trial.set_user_attr("best_epoch", best["epoch"])
                raise optuna.TrialPruned(f"epoch {epoch}: {metric} {value:.4f}")

        try:
            with workers.quiet_fit_warnings():
                result = runner(cfg, run_dir, report,
                                workers.Progress(f"trial {trial.number}", echo))
        except KeyboardInterrupt:
            # Stopped by SIGTERM or Ctrl-C: the trial is failed by Optuna; queue its point
            # again so that the same command resumes the study with it.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            trial.set_user_attr("error", "stopped by a signal; queued again")
            requeue(trial.study, trial.study._storage.get_trial(trial._trial_id))
            raise
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}".splitlines()[0])
            raise
        for name, value in result.valid.items():
            trial.set_user_attr(f"valid.{name}", float(value))
        for name, value in result.test.items():
            trial.set_user_attr(f"test.{name}", float(value))
        trial.set_user_attr("best_epoch", int(result.best_epoch))
        trial.set_user_attr("stop_reason", str(result.stop_reason))
        return float(result.valid[metric])

    return objective


def trial_line(study: optuna.Study, t: FrozenTrial, metric: str) -> str:
    """The line printed when a trial ends: its result, duration and the best so far."""
    took = ""
    if t.datetime_start and t.datetime_complete:
        took = f" in {workers.duration((t.datetime_complete - t.datetime_start).total_seconds())}"
    if t.state == TrialState.COMPLETE:
        what = f"complete, {metric} {t.value:.4f}{took}"
    elif t.state == TrialState.PRUNED:
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        what = "pruned" + (f" at epoch {max(t.intermediate_values)} ({last:.4f})"
                           if last is not None else "") + took
    elif t.user_attrs.get("surplus"):
        return f"trial {t.number}: not run, the budget was already covered"
    elif "duplicate_of" in t.user_attrs:
        return (f"trial {t.number}: not run, trial {t.user_attrs['duplicate_of']} already has "
                f"its point")
    else:
        what = f"failed{took}" + (f" ({t.user_attrs['error']})" if "error" in t.user_attrs
                                  else "")
    try:
        best = study.best_trial
        tail = f"  (best {best.value:.4f}, trial {best.number})"
    except ValueError:
        tail = ""
    return f"trial {t.number}: {what}{tail}"
