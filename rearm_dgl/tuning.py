"""Hyperparameter studies with Optuna: search spaces, storage, workers and study outputs.

A study tunes one model on one dataset. Its pieces:

- **Search space**: a YAML file (``studies/rearm.yaml``) mapping config keys ``section.field``
  to ``{type: float, low, high, log, step}``, ``{type: int, low, high, step, log}`` or
  ``{type: categorical, choices: [...]}``. Every key must be an existing config field; this
  module is the only place that calls ``trial.suggest_*``.
- **Storage**: by default an Optuna journal file, ``studies/<study>/journal.log``, which
  several processes on one machine can share; or any SQLAlchemy URL (PostgreSQL, MySQL) for
  workers on many machines, with heartbeats so that the trials of a killed worker are failed
  and retried.
- **Trials**: trial 0 is the shipped preset for (model, dataset). Each trial is a normal run
  directory, ``studies/<study>/trials/<number>/``; it reports the validation metric
  (``eval.metric``, Recall@20) every epoch for pruning and returns its best value. Test
  metrics are stored as user attributes only.
- **Budget**: ``trials`` counts COMPLETE and PRUNED trials over all workers. A worker stops
  starting trials once finished plus running trials cover the budget, so the study ends with
  exactly that many.
- **Outputs** (:func:`write_outputs`): ``trials.csv``, ``best.yaml``, PNG plots and a
  TensorBoard hparams view with one run per trial.

The study remembers its model, dataset, space and ``--set`` values (study user attribute
``rearm_dgl``); running the same command again resumes it, and asking for different settings
under the same study name is an error.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import socket
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import optuna
from optuna.trial import FrozenTrial, TrialState

from rearm_dgl.config import (
    DataConfig,
    GraphConfig,
    RunConfig,
    build_config,
    config_from_dict,
    field_names,
    parse_override,
    plain,
    read_yaml,
    section_classes,
    with_overrides,
)
from rearm_dgl.errors import ConfigError, RearmError
from rearm_dgl.io_utils import atomic_dir, atomic_save, atomic_write_text
from rearm_dgl.models.registry import canonical as canonical_model

PRUNERS = ("median", "hyperband", "none")
SPACE_TYPES = ("float", "int", "categorical")
JOURNAL_FILE = "journal.log"
TRIALS_DIR = "trials"
TRIALS_CSV = "trials.csv"
BEST_YAML = "best.yaml"
PLOTS_DIR = "plots"
TENSORBOARD_DIR = "tensorboard"
#: Study user attribute holding the settings the study was created with.
STUDY_ATTR = "rearm_dgl"
#: Sections a space may not vary: they define what is measured, not how the model learns.
FROZEN_SECTIONS = ("data", "eval")
#: A trial killed with its worker is retried at most this many times.
MAX_RETRY = 2
#: RDB heartbeats: a running trial whose worker has been silent for GRACE_PERIOD seconds is
#: failed and re-queued by the next worker that starts a trial.
HEARTBEAT_INTERVAL = 20
GRACE_PERIOD = 60
#: Seconds to wait for a database connection before giving up.
CONNECT_TIMEOUT = 5
#: Seconds a worker joining a new study waits for its creator to store the settings.
SETUP_WAIT = 10
#: Epochs every trial runs before the median pruner may stop it.
MEDIAN_WARMUP_EPOCHS = 10
MEDIAN_STARTUP_TRIALS = 5

_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_METRIC_ATTR = re.compile(r"^(valid|test)\.")


class StudyError(RearmError):
    """A study cannot be created, resumed or summarised as asked (storage, budget, settings)."""


# ---------------------------------------------------------------------------------------
# Search spaces


@dataclass(frozen=True)
class ParamSpec:
    """One searched config field.

    Attributes:
        key: The config key, ``section.field``.
        type: ``float``, ``int`` or ``categorical``.
        low: Lower bound (float and int).
        high: Upper bound, inclusive (float and int).
        step: Grid step (int: default 1; float: optional, not with ``log``).
        log: Sample on a log scale (``low`` must be > 0).
        choices: The values of a categorical.
    """

    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial: optuna.trial.Trial) -> Any:
        """Draw this field's value for ``trial``."""
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)
        if self.type == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1,
                                     log=self.log)
        return trial.suggest_categorical(self.key, list(self.choices))

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a point of this space (used for the preset trial)."""
        if self.type == "categorical":
            return any(type(value) is type(c) and value == c for c in self.choices) or (
                isinstance(value, float) and any(
                    isinstance(c, (int, float)) and not isinstance(c, bool)
                    and math.isclose(value, c) for c in self.choices))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not (self.low <= value <= self.high):
            return False
        if self.step:
            n = (value - self.low) / self.step
            return math.isclose(n, round(n), abs_tol=1e-8)
        return True

    def to_dict(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        if self.step is not None:
            out["step"] = self.step
        if self.log:
            out["log"] = True
        return out


@dataclass(frozen=True)
class SearchSpace:
    """An ordered set of :class:`ParamSpec`, read from ``source``."""

    params: tuple[ParamSpec, ...]
    source: str = ""

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def suggest(self, trial: optuna.trial.Trial) -> dict[str, Any]:
        """Draw every field for ``trial``: ``{section.field: value}`` (the only suggest site)."""
        return {p.key: p.suggest(trial) for p in self.params}

    def without(self, keys: Sequence[str]) -> SearchSpace:
        """The space without ``keys`` (fields fixed by ``--set``)."""
        drop = set(keys)
        return replace(self, params=tuple(p for p in self.params if p.key not in drop))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {p.key: p.to_dict() for p in self.params}

    def check_against(self, cfg: RunConfig) -> None:
        """Check every bound and choice is a valid value of its field in ``cfg``.

        Raises:
            ConfigError: naming the space file and the key.
        """
        for p in self.params:
            values = list(p.choices) if p.type == "categorical" else [p.low, p.high]
            for v in values:
                try:
                    with_overrides(cfg, {p.key: v})
                except ConfigError as exc:
                    raise ConfigError(f"{self.source}: {p.key}: value {v!r} is not valid for "
                                      f"this field ({exc}); narrow the range or choices") from None

    def preset_params(self, cfg: RunConfig) -> dict[str, Any]:
        """The values ``cfg`` (the preset) has for every searched key, checked to lie in the space.

        Raises:
            ConfigError: if a preset value is outside its range or choices.
        """
        flat = cfg.flat()
        params = {p.key: plain(flat[p.key]) for p in self.params}
        outside = [f"{p.key}={params[p.key]!r} (space: {p.to_dict()})" for p in self.params
                   if not p.contains(params[p.key])]
        if outside:
            raise ConfigError(
                f"{self.source}: the preset for {cfg.model}/{Path(cfg.data.dataset).name} lies "
                f"outside the space, so trial 0 could not be the preset: {'; '.join(outside)}. "
                f"Widen these ranges (or add the choice), or fix the key with --set")
        return params


def load_space(path: str | Path, model: str = "rearm") -> SearchSpace:
    """Read and check a search-space YAML file for ``model``.

    Raises:
        ConfigError: the file is missing or malformed, a key is not a config field of the
            model, or a spec is invalid; the message names the file and the key.
    """
    path = Path(path)
    mapping = read_yaml(path, "search space file not found; pass --space studies/<file>.yaml "
                              "(studies/rearm.yaml is the REARM default)")
    return parse_space(mapping, str(path), model)


def parse_space(mapping: Any, source: str, model: str = "rearm") -> SearchSpace:
    """Check a ``{section.field: spec}`` mapping and return the :class:`SearchSpace`.

    Args:
        mapping: The parsed YAML.
        source: Where it came from, for messages.
        model: The model whose config fields the keys must name.
    """
    if not isinstance(mapping, dict) or not mapping:
        raise ConfigError(f"{source}: expected a mapping of config keys to specs, e.g. "
                          f"'rearm.cl_tmp: {{type: float, low: 0.01, high: 2.0, log: true}}'")
    types = field_names(section_classes(model))
    params = []
    for key, spec in mapping.items():
        key = str(key)
        if key not in types:
            close = difflib.get_close_matches(key, list(types), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"{source}: {key!r} is not a config field of model {model} "
                              f"(keys are section.field, e.g. rearm.n_layers){hint}")
        if key.split(".", 1)[0] in FROZEN_SECTIONS:
            raise ConfigError(f"{source}: {key}: the {key.split('.', 1)[0]} section defines "
                              f"what is measured and cannot be searched; fix it with --set")
        params.append(_parse_spec(key, spec, types[key], source))
    return SearchSpace(tuple(params), source)


def _parse_spec(key: str, spec: Any, hint: Any, source: str) -> ParamSpec:
    where = f"{source}: {key}"
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"{where}: expected a spec like {{type: float, low: 0.1, high: 1.0}}, "
                          f"{{type: int, low: 1, high: 4}} or {{type: categorical, choices: "
                          f"[a, b]}}; got {spec!r}")
    kind = spec["type"]
    allowed = {"float": {"type", "low", "high", "step", "log"},
               "int": {"type", "low", "high", "step", "log"},
               "categorical": {"type", "choices"}}
    if kind not in allowed:
        raise ConfigError(f"{where}: type must be one of {list(SPACE_TYPES)}, got {kind!r}")
    extra = sorted(set(spec) - allowed[kind])
    if extra:
        raise ConfigError(f"{where}: unknown spec keys {extra} for type {kind}; "
                          f"allowed: {sorted(allowed[kind])}")
    numeric = hint is int or hint is float
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: categorical needs a non-empty list 'choices'")
        for c in choices:
            if c is not None and not isinstance(c, (bool, int, float, str)):
                raise ConfigError(f"{where}: choice {c!r} is not a scalar (number, string, "
                                  f"true/false or null)")
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{where}: choices repeat a value: {choices}")
        return ParamSpec(key, "categorical", choices=tuple(choices))
    if not numeric:
        raise ConfigError(f"{where}: this field is {_type_label(hint)}; search it with "
                          f"type: categorical")
    if kind == "float" and hint is int:
        raise ConfigError(f"{where}: this field is an integer; use type: int")
    for bound in ("low", "high"):
        v = spec.get(bound)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}: '{bound}' must be a number, got {v!r}")
        if kind == "int" and int(v) != v:
            raise ConfigError(f"{where}: '{bound}' must be an integer for type int, got {v!r}")
    low, high = spec["low"], spec["high"]
    log = spec.get("log", False)
    step = spec.get("step")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: 'log' must be true or false, got {log!r}")
    if low > high:
        raise ConfigError(f"{where}: low ({low}) must be <= high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log-scale range needs low > 0, got {low}")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise ConfigError(f"{where}: 'step' must be a positive number, got {step!r}")
        if kind == "int" and int(step) != step:
            raise ConfigError(f"{where}: 'step' must be an integer for type int, got {step!r}")
        if log and (kind == "float" or step != 1):
            raise ConfigError(f"{where}: 'step' cannot be combined with log: true")
    if kind == "int":
        return ParamSpec(key, "int", int(low), int(high), int(step) if step else None, log)
    return ParamSpec(key, "float", float(low), float(high),
                     float(step) if step is not None else None, log)


def _type_label(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return f"one of {list(get_args(hint))}"
    return getattr(hint, "__name__", str(hint))


# ---------------------------------------------------------------------------------------
# Storage


@dataclass(frozen=True)
class StorageSpec:
    """Where a study lives: a journal file (``url`` None) or a SQLAlchemy database URL."""

    url: str | None = None
    journal_path: Path | None = None

    @property
    def is_journal(self) -> bool:
        return self.url is None

    def describe(self) -> str:
        """A printable name (the database password hidden)."""
        if self.is_journal:
            return str(self.journal_path)
        import sqlalchemy

        return sqlalchemy.engine.make_url(self.url).render_as_string(hide_password=True)


def parse_storage(url: str | None, study_dir: Path) -> StorageSpec:
    """Check a ``--storage`` value without connecting; None means the study's journal file.

    Raises:
        StudyError: for a malformed URL or a database driver that is not installed.
    """
    if url is None or url == "":
        return StorageSpec(None, study_dir / JOURNAL_FILE)
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    example = "postgresql://user:password@host:5432/dbname"
    if "://" not in url:
        raise StudyError(f"--storage {url!r}: not a database URL; expected a SQLAlchemy URL "
                         f"such as {example}, or leave --storage out to use the local journal "
                         f"file studies/<study>/{JOURNAL_FILE}")
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StudyError(f"--storage {url!r}: malformed database URL ({exc}); expected e.g. "
                         f"{example}") from None
    parsed = _with_installed_driver(parsed)
    shown = parsed.render_as_string(hide_password=True)
    try:
        parsed.get_dialect().import_dbapi()
    except NoSuchModuleError:
        hint = " (did you mean postgresql://?)" if parsed.drivername.startswith("postgres") else ""
        raise StudyError(f"--storage {shown}: unknown database kind {parsed.drivername!r}"
                         f"{hint}; use e.g. {example}") from None
    except ImportError as exc:
        raise StudyError(f"--storage {shown}: the database driver is not installed ({exc}); "
                         f"for PostgreSQL: pip install 'rearm-dgl[postgres]'") from None
    return StorageSpec(parsed.render_as_string(hide_password=False), None)


def _with_installed_driver(url: Any) -> Any:
    """A bare ``postgresql://`` URL with the PostgreSQL driver that is installed.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3; the ``postgres`` extra installs
    psycopg2, so use it when psycopg 3 is absent.
    """
    if url.drivername != "postgresql":
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return url.set(drivername="postgresql+psycopg2")
    return url


def _engine_kwargs(url: str) -> dict[str, Any]:
    import sqlalchemy

    backend = sqlalchemy.engine.make_url(url).get_backend_name()
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if backend in ("postgresql", "mysql", "mariadb"):
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    return kwargs


def check_reachable(spec: StorageSpec) -> None:
    """Connect once to a database storage (within CONNECT_TIMEOUT s) without writing to it.

    Raises:
        StudyError: naming the server when it cannot be reached or refuses the login.
    """
    if spec.is_journal:
        return
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    engine = sqlalchemy.create_engine(spec.url, poolclass=sqlalchemy.pool.NullPool,
                                      **{k: v for k, v in _engine_kwargs(spec.url).items()
                                         if k != "pool_pre_ping"})
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise StudyError(f"--storage {spec.describe()}: cannot connect to the database "
                         f"({reason[0] if reason else type(exc).__name__}); check that the "
                         f"server runs and is reachable, and the user, password and database "
                         f"name") from None
    finally:
        engine.dispose()


def open_storage(spec: StorageSpec) -> optuna.storages.BaseStorage:
    """Open the storage (creating the journal file or the database tables if needed)."""
    if spec.is_journal:
        from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

        spec.journal_path.parent.mkdir(parents=True, exist_ok=True)
        path = str(spec.journal_path)
        # The lock serialises appends from several processes; a lock left by a killed
        # process is broken after its grace period.
        return optuna.storages.JournalStorage(
            JournalFileBackend(path, lock_obj=JournalFileSymlinkLock(path, grace_period=30)))
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
                return optuna.storages.RDBStorage(
                    spec.url, engine_kwargs=_engine_kwargs(spec.url),
                    heartbeat_interval=HEARTBEAT_INTERVAL, grace_period=GRACE_PERIOD,
                    heartbeat_stale_trial_callback=retry)
        except SQLAlchemyError as exc:
            # Workers that open a fresh database at once race to create Optuna's tables;
            # the loser finds them on the next try.
            if attempt == 4:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
                raise StudyError(f"--storage {spec.describe()}: cannot set up the study tables "
                                 f"({reason[0] if reason else type(exc).__name__}); check "
                                 f"that the user may create tables in that database") from None
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def _existing_study(spec: StorageSpec, name: str) -> tuple[optuna.storages.BaseStorage | None,
                                                            bool]:
    """(storage or None, whether the study exists), touching nothing for a new journal study."""
    if spec.is_journal and not spec.journal_path.is_file():
        return None, False
    check_reachable(spec)
    storage = open_storage(spec)
    return storage, name in {s.study_name for s in storage.get_all_studies()}


# ---------------------------------------------------------------------------------------
# Study settings


@dataclass(frozen=True)
class StudySettings:
    """What a study is: stored on the study and checked when it is resumed."""

    model: str
    dataset: str
    space: dict[str, dict[str, Any]]
    fixed: dict[str, Any]
    metric: str
    space_file: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "dataset": self.dataset, "space": self.space,
                "fixed": self.fixed, "metric": self.metric, "space_file": self.space_file}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StudySettings:
        return cls(d["model"], d["dataset"], dict(d["space"]), dict(d.get("fixed", {})),
                   d["metric"], d.get("space_file", ""))


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


def _study_dir(studies_dir: str | Path, name: str) -> Path:
    return Path(studies_dir) / name


def _check_name(name: str) -> None:
    if not _STUDY_NAME.match(name):
        raise StudyError(f"--study {name!r}: use letters, digits, '.', '_' and '-' only "
                         f"(it names a folder under the studies directory)")


def _default_space(studies_dir: Path, model: str) -> Path:
    for candidate in (studies_dir / f"{model}.yaml", Path("studies") / f"{model}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no search space given and {studies_dir / f'{model}.yaml'} does not "
                      f"exist; pass --space studies/<file>.yaml")


def _plan(name: str | None, *, model: str | None, dataset: str | None,
          space: str | Path | None, overrides: Sequence[str], storage: str | None,
          studies_dir: Path) -> _Plan:
    """Resolve and check a run's settings; reads (never writes) an existing study."""
    model = canonical_model(model) if model else None  # -m BPR is mf, LightGCN is lightgcn
    model_hint = model or "rearm"
    if name is None:
        from rearm_dgl.tracking import dataset_label

        name = f"{model_hint}-{dataset_label(dataset or 'demo')}"
    _check_name(name)
    spec = parse_storage(storage, _study_dir(studies_dir, name))
    fixed = _parse_sets(overrides)
    storage_obj, exists = _existing_study(spec, name)
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
        path = _default_space(studies_dir, model)
        sp, space_file = load_space(path, model), str(path)
    fixed_keys = {_full_key(k, base) for k in fixed}
    sp = sp.without(sorted(fixed_keys))
    if not sp.params:
        raise ConfigError(f"{space_file}: every searched key is fixed by --set; nothing to "
                          f"tune")
    settings = StudySettings(model, base.data.dataset, sp.to_dict(), fixed, base.eval.metric,
                             space_file)
    if stored:
        _check_resume(name, spec, stored, settings)
    sp.check_against(base)
    sp.preset_params(base)
    return _Plan(name, spec, settings, base, sp, exists, storage_obj)


def _check_resume(name: str, spec: StorageSpec, stored: StudySettings,
                  asked: StudySettings) -> None:
    diffs = []
    for attr in ("model", "dataset", "metric", "fixed", "space"):
        a, b = getattr(stored, attr), getattr(asked, attr)
        if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            diffs.append(f"{attr}: stored {a!r}, asked {b!r}")
    if diffs:
        raise StudyError(f"study {name!r} in {spec.describe()} was created with other "
                         f"settings ({'; '.join(diffs)}). Rerun with the original settings to "
                         f"resume it, or choose a new --study name")


# ---------------------------------------------------------------------------------------
# Workers and the objective


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
    threads: int | None = None


def _make_pruner(kind: str, epochs: int) -> optuna.pruners.BasePruner:
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS,
                                           n_warmup_steps=min(MEDIAN_WARMUP_EPOCHS, epochs - 1))
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1),
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


def _make_sampler(seed: int) -> optuna.samplers.BaseSampler:
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
                 callback: Callable[[int, dict[str, float]], None]) -> Any:
        from rearm_dgl.train import fit

        data = self.data(cfg.data)
        return fit(cfg, run_dir=run_dir, data=data, graph=self.graph(cfg, data),
                   callbacks=(callback,), quiet=True)


class _SurplusTrial(Exception):
    """Raised in a trial started after the budget was already covered (a race between workers)."""


_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _budget_state(study: optuna.Study) -> tuple[int, list[FrozenTrial]]:
    trials = study.get_trials(deepcopy=False, states=(*_FINISHED, TrialState.RUNNING))
    done = sum(t.state in _FINISHED for t in trials)
    return done, [t for t in trials if t.state == TrialState.RUNNING]


def _worker_identity() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "boot": _boot_id(),
            "start": _process_start(os.getpid())}


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot ("" when unknown); tells a
    reused pid from the original process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _worker_is_dead(worker: Mapping[str, Any]) -> bool:
    """Whether a worker recorded on this machine is gone (other machines: never assumed)."""
    if worker.get("host") != socket.gethostname():
        return False
    if worker.get("boot") and _boot_id() and worker["boot"] != _boot_id():
        return True  # this machine rebooted since
    pid = int(worker.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    start = worker.get("start")
    return bool(start) and _process_start(pid) not in ("", start)


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
            if not isinstance(worker, dict) or not _worker_is_dead(worker):
                continue
            try:
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, KeyError):
                continue  # another process recovered it first
            _requeue(study, storage.get_trial(t._trial_id))
            recovered.append(t.number)
            echo(f"trial {t.number}: its worker (pid {worker.get('pid')}) is gone; "
                 f"marked failed and queued again")
    return recovered


def _requeue(study: optuna.Study, trial: FrozenTrial) -> None:
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


def _objective_factory(spec: WorkerSpec, runner: Callable):
    base = config_from_dict(spec.base)
    space = parse_space(spec.settings.space, spec.settings.space_file, spec.settings.model)
    metric = spec.settings.metric
    trials_dir = _study_dir(spec.studies_dir, spec.study) / TRIALS_DIR
    identity = _worker_identity()

    def objective(trial: optuna.trial.Trial) -> float:
        done, running = _budget_state(trial.study)
        me = next((t for t in running if t.number == trial.number), None)
        order = (me.datetime_start, trial.number) if me else None
        earlier = [t for t in running if t.number != trial.number and order is not None
                   and (t.datetime_start, t.number) < order]
        if done + len(earlier) >= spec.trials:
            trial.set_user_attr("surplus", True)
            raise _SurplusTrial(f"trial {trial.number}: the budget of {spec.trials} trials was "
                                f"already covered when it started")
        trial.set_user_attr("worker", identity)
        params = space.suggest(trial)
        cfg = with_overrides(base, params)
        run_dir = trials_dir / str(trial.number)
        if run_dir.exists():  # left by an earlier study of the same name
            shutil.rmtree(run_dir)
        from rearm_dgl.tracking import config_fingerprint

        trial.set_user_attr("run_dir", str(run_dir))
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

        result = runner(cfg, run_dir, report)
        for name, value in result.valid.items():
            trial.set_user_attr(f"valid.{name}", float(value))
        for name, value in result.test.items():
            trial.set_user_attr(f"test.{name}", float(value))
        trial.set_user_attr("best_epoch", int(result.best_epoch))
        trial.set_user_attr("stop_reason", str(result.stop_reason))
        return float(result.valid[metric])

    return objective


def _trial_line(study: optuna.Study, t: FrozenTrial, metric: str) -> str:
    if t.state == TrialState.COMPLETE:
        what = f"complete, {metric} {t.value:.4f}"
    elif t.state == TrialState.PRUNED:
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        what = "pruned" + (f" at epoch {max(t.intermediate_values)} ({last:.4f})"
                           if last is not None else "")
    elif t.user_attrs.get("surplus"):
        return f"trial {t.number}: not run, the budget was already covered"
    else:
        what = "failed"
    try:
        best = study.best_trial
        tail = f"  (best {best.value:.4f}, trial {best.number})"
    except ValueError:
        tail = ""
    return f"trial {t.number}: {what}{tail}"


def run_worker(spec: WorkerSpec, runner: Callable | None = None,
               echo: Callable[[str], None] = print) -> None:
    """Run trials of a study until its budget (or ``spec.timeout``) is reached.

    Args:
        spec: The study, its storage and settings.
        runner: ``runner(cfg, run_dir, callback) -> FitResult``; :class:`FitRunner` if None.
        echo: Where progress lines go.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if spec.threads:
        import torch

        torch.set_num_threads(spec.threads)
    storage = open_storage(spec.storage)
    base_epochs = int(spec.base["train"]["epochs"])
    study = optuna.load_study(study_name=spec.study, storage=storage,
                              sampler=_make_sampler(spec.seed),
                              pruner=_make_pruner(spec.pruner, base_epochs))
    recover_dead_trials(study, echo)
    done, running = _budget_state(study)
    if done >= spec.trials:
        return
    if done + len(running) >= spec.trials:
        echo(f"study {spec.study}: {done} trials finished and {len(running)} running cover the "
             f"budget of {spec.trials}; nothing to start")
        return
    runner = runner or FitRunner()
    metric = spec.settings.metric

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        echo(_trial_line(study, trial, metric))
        done, running = _budget_state(study)
        if done + len(running) >= spec.trials:
            study.stop()
            return
        failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                  if not t.user_attrs.get("surplus")]
        if len(failed) >= max(spec.trials, 5):
            echo(f"study {spec.study}: {len(failed)} trials failed; stopping this worker "
                 f"(see the trial folders under {Path(spec.studies_dir) / spec.study})")
            study.stop()

    study.optimize(_objective_factory(spec, runner), timeout=spec.timeout,
                   callbacks=[after_trial], catch=(_SurplusTrial,), gc_after_trial=True)


def _worker_main(spec: WorkerSpec, index: int) -> None:
    """Entry point of a spawned worker process."""
    def echo(line: str) -> None:
        print(f"[worker {index}] {line}", flush=True)

    try:
        run_worker(spec, echo=echo)
    except RearmError as exc:
        print(f"[worker {index}] error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


# ---------------------------------------------------------------------------------------
# Running a study


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
    # A bad dataset fails here, before the study exists.
    if jobs > 1:
        if runner is not None:
            raise ValueError("run_study: a custom runner needs jobs=1 (workers are processes)")
        from rearm_dgl.data import load_dataset

        load_dataset(plan.base.data)
    else:
        runner = runner or FitRunner()
        if isinstance(runner, FitRunner):
            runner.data(plan.base.data)

    # Checked: now create or resume.
    storage_obj = plan.storage_obj or open_storage(plan.storage)
    _create_or_join(plan, storage_obj)
    echo(f"study {plan.name} ({plan.storage.describe()}): {plan.settings.model} on "
         f"{plan.settings.dataset}, {len(plan.space.params)} searched keys, budget {trials} "
         f"trials, {jobs} worker(s)")
    spec = WorkerSpec(plan.name, plan.storage, plan.settings, plan.base.to_dict(), trials,
                      timeout, seed, pruner, str(studies_dir))
    failures: list[str] = []
    if jobs == 1:
        run_worker(spec, runner, echo)
    else:
        failures = _run_processes(spec, jobs)
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
    the creator died before finishing it.
    """
    try:
        st = optuna.create_study(study_name=plan.name, storage=storage, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        st = optuna.load_study(study_name=plan.name, storage=storage)
        deadline = time.monotonic() + SETUP_WAIT
        while STUDY_ATTR not in st.user_attrs and time.monotonic() < deadline:
            time.sleep(0.2)
        if STUDY_ATTR in st.user_attrs:
            _check_resume(plan.name, plan.storage,
                          StudySettings.from_dict(st.user_attrs[STUDY_ATTR]), plan.settings)
            return st
    if not st.get_trials(deepcopy=False):
        st.enqueue_trial(plan.space.preset_params(plan.base), user_attrs={"preset": True},
                         skip_if_exists=True)
    st.set_user_attr(STUDY_ATTR, plan.settings.to_dict())
    return st


def _run_processes(spec: WorkerSpec, jobs: int) -> list[str]:
    threads = max(1, (os.cpu_count() or 1) // jobs)
    ctx = multiprocessing.get_context("spawn")
    procs = []
    for k in range(jobs):
        worker = replace(spec, seed=spec.seed + k, threads=threads)
        p = ctx.Process(target=_worker_main, args=(worker, k), name=f"rearm-tune-{k}")
        p.start()
        procs.append(p)
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=30)
        raise
    return [f"worker {k} exited with code {p.exitcode}" for k, p in enumerate(procs)
            if p.exitcode != 0]


# ---------------------------------------------------------------------------------------
# Outputs


def summarize(study: str, *, storage: str | None = None,
              studies_dir: str | Path = "studies") -> StudyResult:
    """Write a study's outputs (``trials.csv``, ``best.yaml``, plots, TensorBoard) and
    return its summary.

    Raises:
        StudyError: if the study does not exist in that storage.
    """
    _check_name(study)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = parse_storage(storage, _study_dir(studies_dir, study))
    storage_obj, exists = _existing_study(spec, study)
    if not exists:
        raise StudyError(f"no study named {study!r} in {spec.describe()}; check --study, "
                         f"--storage and --studies-dir")
    st = optuna.load_study(study_name=study, storage=storage_obj)
    result = write_outputs(st, _study_dir(studies_dir, study))
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

    write_trials_csv(trials, out_dir / TRIALS_CSV)
    result.files.append(out_dir / TRIALS_CSV)

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        result.best_number, result.best_value = best.number, best.value
        result.best_params = dict(best.params)
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


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    return value


def write_trials_csv(trials: Sequence[FrozenTrial], path: Path) -> None:
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
            + [_csv_cell(t.params.get(k)) for k in param_keys]
            + [_csv_cell(t.user_attrs.get(k)) for k in attr_keys])
    atomic_write_text(path, buf.getvalue())


def best_config(study: optuna.Study, trial: FrozenTrial) -> RunConfig:
    """The full config of ``trial``: as recorded by the trial, else rebuilt from the study."""
    if isinstance(trial.user_attrs.get("config"), dict):
        return config_from_dict(trial.user_attrs["config"])
    s = StudySettings.from_dict(study.user_attrs[STUDY_ATTR])
    base = build_config(s.model, s.dataset,
                        overrides=[f"{k}={json.dumps(v)}" for k, v in s.fixed.items()])
    return with_overrides(base, dict(trial.params))


def write_best_yaml(study: optuna.Study, trial: FrozenTrial, path: Path) -> None:
    """Write the best trial's config as a file ``rearm-dgl train --config`` accepts."""
    cfg = best_config(study, trial)
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
        ("parallel_coordinate", ovm.plot_parallel_coordinate,
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


def write_tensorboard(trials: Sequence[FrozenTrial], out_dir: Path,
                      settings: Mapping[str, Any]) -> Path | None:
    """A TensorBoard hparams view: one run per finished trial in ``out_dir/<number>/``.

    The folder is rebuilt from scratch in a temporary sibling and swapped in, so it always
    holds one consistent set of runs.
    """
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    shown = [t for t in trials if t.state in _FINISHED]
    if not shown:
        return None
    metric = settings.get("metric", "value")
    discrete = {}
    for key, spec in settings.get("space", {}).items():
        if spec.get("type") == "categorical":
            discrete[key] = list(spec["choices"])
    keys = sorted({k for t in shown for k in t.params})
    with atomic_dir(out_dir) as tmp:
        for t in shown:
            hp = {k: _hparam_value(t.params.get(k)) for k in keys}
            hp["state"] = t.state.name
            values = dict(t.intermediate_values)
            best = t.value if t.state == TrialState.COMPLETE else (
                max(values.values()) if values else float("nan"))
            metrics = {f"hparam/valid.{metric}": float(best)}
            for k, v in t.user_attrs.items():
                if _METRIC_ATTR.match(k) and k != f"valid.{metric}" and isinstance(v, float):
                    metrics[f"hparam/{k}"] = v
            run = tmp / str(t.number)
            with SummaryWriter(log_dir=str(run)) as w:
                exp, ssi, sei = hparams(hp, metrics, {**discrete, "state": ["COMPLETE", "PRUNED"]})
                for summary in (exp, ssi, sei):
                    w.file_writer.add_summary(summary)
                for name, value in metrics.items():
                    w.add_scalar(name, value)
                for step, value in sorted(values.items()):
                    w.add_scalar(f"valid/{metric}", value, step)
    return out_dir


def _hparam_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


__all__ = [
    "BEST_YAML", "FitRunner", "JOURNAL_FILE", "ParamSpec", "PRUNERS", "SearchSpace",
    "StorageSpec", "StudyError", "StudyResult", "StudySettings", "WorkerSpec", "best_config",
    "check_reachable", "load_space", "open_storage", "parse_space", "parse_storage",
    "recover_dead_trials", "run_study", "run_worker", "summarize", "write_outputs",
]
