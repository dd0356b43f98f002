"""What a study writes: ``trials.csv``, ``best.yaml``, PNG plots and a TensorBoard view.

All of them are rebuilt from the study's storage alone (:func:`summarize`), so any machine
that reaches the storage can write them, and each is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from rearm_dgl.config import RunConfig, TrainConfig, build_config, config_from_dict, with_overrides
from rearm_dgl.io_utils import atomic_dir, atomic_save, atomic_write_text
from rearm_dgl.tuning.objective import FINISHED
from rearm_dgl.tuning.settings import (
    BEST_YAML,
    PLOTS_DIR,
    STUDY_ATTR,
    TENSORBOARD_DIR,
    TRIALS_CSV,
    StudyError,
    StudySettings,
    check_name,
    study_dir,
)
from rearm_dgl.tuning.space import parse_space
from rearm_dgl.tuning.storage import existing_study, parse_storage

#: The parallel-coordinate plot shows at most this many parameters (the most important).
PARALLEL_AXES = 6
_METRIC_ATTR = re.compile(r"^(valid|test)\.")



@dataclass
class StudyResult:
    """What :func:`run_study` and :func:`summarize` return.

    Attributes:
        study: The study name.
        storage: Where it lives (password hidden).
        out_dir: ``studies/<study>/``, where the outputs are written.
        counts: Number of trials per state name.
        best_number: The best completed trial (None if none completed).
        best_value: Its validation metric.
        best_params: Its searched values.
        files: The output files written.
        notes: Outputs that were skipped, and why.
        metric: The validation metric the study selects on.
    """

    study: str
    storage: str
    out_dir: Path
    counts: dict[str, int] = field(default_factory=dict)
    best_number: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metric: str = "value"

    def describe(self) -> str:
        """Counts per state, the best trial and the files written, one per line."""
        metric = self.metric
        counts = ", ".join(f"{n} {s.lower()}" for s, n in self.counts.items() if n)
        lines = [f"study {self.study} ({self.storage}): {counts or 'no trials'}"]
        if self.best_number is not None:
            lines.append(f"best: trial {self.best_number}, {metric} {self.best_value:.4f}")
            lines += [f"  {k} = {v}" for k, v in self.best_params.items()]
        lines += [f"wrote {p}" for p in self.files]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)




def summarize(study: str, *, storage: str | None = None,
              studies_dir: str | Path = "studies") -> StudyResult:
    """Write a study's outputs (``trials.csv``, ``best.yaml``, plots, TensorBoard) and
    return its summary.

    Raises:
        StudyError: if the study does not exist in that storage.
    """
    check_name(study)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = parse_storage(storage, study_dir(studies_dir, study))
    storage_obj, exists = existing_study(spec, study)
    if not exists:
        raise StudyError(f"no study named {study!r} in {spec.describe()}; check --study, "
                         f"--storage and --studies-dir")
    st = optuna.load_study(study_name=study, storage=storage_obj)
    result = write_outputs(st, study_dir(studies_dir, study))
    result.storage = spec.describe()
    return result


def write_outputs(study: optuna.Study, out_dir: str | Path) -> StudyResult:
    """Write ``trials.csv``, ``best.yaml``, ``plots/*.png`` and ``tensorboard/<trial>/``."""
    out_dir = Path(out_dir)
    trials = study.get_trials(deepcopy=False)
    settings = study.user_attrs.get(STUDY_ATTR, {})
    result = StudyResult(study.study_name, "", out_dir,
                         metric=settings.get("metric", "value"))
    for state in TrialState:
        result.counts[state.name] = sum(t.state == state for t in trials)

    write_trials_csv(trials, out_dir / TRIALS_CSV, settings.get("space"))
    result.files.append(out_dir / TRIALS_CSV)

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        result.best_number, result.best_value = best.number, best.value
        result.best_params = rounded_params(best.params, settings.get("space"))
        write_best_yaml(study, best, out_dir / BEST_YAML)
        result.files.append(out_dir / BEST_YAML)
    else:
        result.notes.append(f"{BEST_YAML} not written: no completed trial yet")

    files, notes = write_plots(study, out_dir / PLOTS_DIR)
    result.files += files
    result.notes += notes
    tb = write_tensorboard(trials, out_dir / TENSORBOARD_DIR, settings)
    if tb is not None:
        result.files.append(tb)
    return result


def rounded_params(params: Mapping[str, Any], space: Mapping[str, Any] | None
                   ) -> dict[str, Any]:
    """``params`` with stepped floats rounded to their step (as the trials used them)."""
    if not space:
        return dict(params)
    specs = {p.key: p for p in parse_space(dict(space), "stored space", _model_of(space)).params}
    return {k: specs[k].rounded(v) if k in specs else v for k, v in params.items()}


def _model_of(space: Mapping[str, Any]) -> str:
    from rearm_dgl.models import registry

    sections = {k.split(".", 1)[0] for k in space}
    return next((s for s in sections if s in registry.names()), "rearm")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    return value


def write_trials_csv(trials: Sequence[FrozenTrial], path: Path,
                     space: Mapping[str, Any] | None = None) -> None:
    """One row per trial: number, state, value, times, ``params_*``, ``user_attrs_*``."""
    param_keys = sorted({k for t in trials for k in t.params})
    skip = {"config", "worker"}
    attr_keys = sorted({k for t in trials for k in t.user_attrs if k not in skip})
    header = (["number", "state", "value", "datetime_start", "datetime_complete",
               "duration_s", "retry_of"] + [f"params_{k}" for k in param_keys]
              + [f"user_attrs_{k}" for k in attr_keys])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for t in sorted(trials, key=lambda t: t.number):
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_start and t.datetime_complete else None
        writer.writerow(
            [t.number, t.state.name, t.value, t.datetime_start, t.datetime_complete, duration,
             t.system_attrs.get("failed_trial")]
            + [_csv_cell(rounded_params(t.params, space).get(k)) for k in param_keys]
            + [_csv_cell(t.user_attrs.get(k)) for k in attr_keys])
    atomic_write_text(path, buf.getvalue())


def best_config(study: optuna.Study, trial: FrozenTrial) -> RunConfig:
    """The full config of ``trial``: as recorded by the trial, else rebuilt from the study."""
    if isinstance(trial.user_attrs.get("config"), dict):
        return config_from_dict(trial.user_attrs["config"])
    s = StudySettings.from_dict(study.user_attrs[STUDY_ATTR])
    base = build_config(s.model, s.dataset,
                        overrides=[f"{k}={json.dumps(v)}" for k, v in s.fixed.items()])
    return with_overrides(base, rounded_params(trial.params, s.space))


def write_best_yaml(study: optuna.Study, trial: FrozenTrial, path: Path) -> None:
    """Write the best trial's config as a file ``rearm-dgl train --config`` accepts.

    Trials keep no checkpoints; the retrained winner keeps the usual ones (the default
    ``train.keep_checkpoints``) unless the study fixed that key.
    """
    cfg = best_config(study, trial)
    fixed = study.user_attrs.get(STUDY_ATTR, {}).get("fixed", {})
    if "train.keep_checkpoints" not in fixed and "keep_checkpoints" not in fixed:
        cfg = with_overrides(cfg, {"train.keep_checkpoints": TrainConfig().keep_checkpoints})
    metric = cfg.eval.metric
    header = (f"# Best trial {trial.number} of study {study.study_name}: validation {metric} "
              f"{trial.value:.6f}.\n# Train it with: rearm-dgl train --config {path.name}\n")
    atomic_write_text(path, header + cfg.to_yaml())


def _figure(ax: Any):
    import numpy as np

    if isinstance(ax, np.ndarray):
        ax = ax.flat[0]
    return ax.figure


def write_plots(study: optuna.Study, out_dir: Path) -> tuple[list[Path], list[str]]:
    """The Optuna matplotlib plots as PNG: history, importances, parallel coordinate and
    intermediate values. Returns (files written, notes on plots skipped)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display needed
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    reported = [t for t in study.get_trials(deepcopy=False) if t.intermediate_values]
    varying = [k for k in {k for t in complete for k in t.params}
               if len({repr(t.params.get(k)) for t in complete}) > 1]
    plots: list[tuple[str, Callable, str | None]] = [
        ("optimization_history", ovm.plot_optimization_history,
         None if complete else "no completed trial"),
        ("param_importances", ovm.plot_param_importances,
         None if len(complete) >= 2 and varying
         else "needs at least 2 completed trials whose parameters differ"),
        ("parallel_coordinate", lambda st: ovm.plot_parallel_coordinate(
            st, params=_important_params(st, varying)),
         None if complete else "no completed trial"),
        ("intermediate_values", ovm.plot_intermediate_values,
         None if reported else "no trial reported a value yet"),
    ]
    files, notes = [], []
    for name, plot, skip in plots:
        path = out_dir / f"{name}.png"
        if skip:
            notes.append(f"{path.name} skipped: {skip}")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fig = _figure(plot(study))
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                notes.append(f"{path.name} skipped: {exc}")
                plt.close("all")
                continue
        try:
            fig.set_size_inches(9, 6)
            atomic_save(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=100,
                                                               bbox_inches="tight"))
        finally:
            plt.close(fig)
        files.append(path)
    return files, notes


def _important_params(study: optuna.Study, varying: Sequence[str]) -> list[str] | None:
    """The PARALLEL_AXES most important parameters (all of them when they are few)."""
    names = sorted({k for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    for k in t.params})
    if len(names) <= PARALLEL_AXES:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ranked = list(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError, ZeroDivisionError):
        ranked = sorted(varying)
    ranked += [k for k in names if k not in ranked]
    return ranked[:PARALLEL_AXES]


def write_tensorboard(trials: Sequence[FrozenTrial], out_dir: Path,
                      settings: Mapping[str, Any]) -> Path | None:
    """A TensorBoard hparams view: one session per finished trial in ``out_dir/<number>/``.

    Each trial is written by :func:`rearm_dgl.hparams.write_session`, as training runs are, so
    the metric names match (``hparam/valid.<metric>``, ``hparam/test.<metric>``) and runs and
    trials can share a logdir. The folder is rebuilt from scratch in a temporary sibling and
    swapped in, so it always holds one consistent set of runs.
    """
    from torch.utils.tensorboard import SummaryWriter

    from rearm_dgl.hparams import metric_tag, write_session

    shown = [t for t in trials if t.state in FINISHED]
    if not shown:
        return None
    metric = settings.get("metric", "value")
    with atomic_dir(out_dir) as tmp:
        for t in shown:
            hp = {**t.params, "state": t.state.name}
            values = dict(t.intermediate_values)
            best = t.value if t.state == TrialState.COMPLETE else (
                max(values.values()) if values else float("nan"))
            metrics = {metric_tag("valid", metric): float(best)}
            for k, v in t.user_attrs.items():
                if _METRIC_ATTR.match(k) and k != f"valid.{metric}" and isinstance(v, float):
                    split, _, name = k.partition(".")
                    metrics[metric_tag(split, name)] = v
            run = tmp / str(t.number)
            write_session(run, hp, metrics, start_time=t.datetime_start.timestamp()
                          if t.datetime_start else None)
            with SummaryWriter(log_dir=str(run)) as w:
                for step, value in sorted(values.items()):
                    w.add_scalar(f"valid/{metric}", value, step)
    return out_dir

