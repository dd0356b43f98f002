"""Typed run configuration.

A run is described by one :class:`RunConfig`: which model, which data, the graph settings,
the model's own hyperparameters, training and evaluation. Defaults live in the dataclasses.
The merge order is

    dataclass defaults -> shipped preset for (model, dataset) -> YAML file -> ``--set k=v``

Keys are ``section.field`` (``train.lr``, ``rearm.n_layers``); a bare ``field`` is accepted
where it names exactly one field. Unknown keys and wrong types raise :class:`ConfigError`
naming the file (for a YAML file) and the key, with the closest known key as a suggestion;
MMRec's and RecBole's names for the same settings (:data:`FOREIGN_KEYS`) are suggested too.
Model names go through :func:`rearm_dgl.models.registry.canonical` (``BPR`` is ``mf``).

Each model's hyperparameters are a frozen dataclass that lives next to the model and is
registered with it (see :mod:`rearm_dgl.models.base`); its YAML section is the model's name.
"""

from __future__ import annotations

import difflib
import logging
import math
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from rearm_dgl.errors import ConfigError

NEGATIVE_MODES = ("all_known", "train_only")
DEVICES = ("auto", "cpu", "cuda")
#: Largest seed: NumPy's seeding takes 0 <= seed < 2**32 (torch's takes more).
SEED_MAX = 2**32 - 1

#: MMRec's and RecBole's names for settings that are spelled differently here. An unknown
#: key that is one of them gets the matching key as its suggestion; README.md has the table.
FOREIGN_KEYS = {
    "learning_rate": "train.lr",
    "stopping_step": "train.patience",
    "train_batch_size": "train.batch_size",
    "eval_batch_size": "eval.batch_size",
    "valid_metric": "eval.metric",
    "knn_k": "graph.item_knn_k",
    "use_gpu": "train.device",
    "gpu_id": "train.device",
    "data_path": "data.data_root",
}

log = logging.getLogger(__name__)

#: Keys that earlier versions had, with what replaced them. In a YAML file (such as an older
#: run's config.yaml) they are skipped with a warning; as ``--set`` they are an error.
RETIRED_KEYS = {
    "train.checkpoint_every": "the resumable checkpoint is written every "
                              "train.checkpoint_minutes of wall time (default 10) instead",
}


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to load.

    Attributes:
        dataset: ``demo``, a dataset name under ``data_root``, or a directory path.
        data_root: Folder that holds named datasets (``<data_root>/<name>/``).
        cache_dir: Where graph caches go. Empty: ``<dataset dir>/_cache`` if writable,
            else the user cache folder (``$REARM_DGL_CACHE`` or ``~/.cache/rearm-dgl``).
    """

    dataset: str = "demo"
    data_root: str = "data"
    cache_dir: str = ""


@dataclass(frozen=True)
class GraphConfig:
    """Settings that change the relation heterograph (and so its cache key).

    Attributes:
        user_knn_k: Neighbours per user in the interest kNN and co-occurrence relations.
        item_knn_k: Neighbours per item in the semantic kNN and co-occurrence relations.
        co_weight_mode: Co-occurrence row weights: ``softmax`` over kept counts or ``mean``.
        seed: Seed for the co-occurrence padding and tie order.
    """

    user_knn_k: int = 40
    item_knn_k: int = 10
    co_weight_mode: Literal["softmax", "mean"] = "softmax"
    seed: int = 2025

    def __post_init__(self):
        check(self.user_knn_k >= 1, "graph.user_knn_k", "must be >= 1")
        check(self.item_knn_k >= 1, "graph.item_knn_k", "must be >= 1")
        check_seed("graph.seed", self.seed)


@dataclass(frozen=True)
class TrainConfig:
    """Training loop settings (spec section 5).

    Attributes:
        epochs: Maximum number of epochs.
        patience: Stop when this many epochs in a row do not improve the stopping metric.
        batch_size: BPR triples per batch.
        lr: Learning rate.
        seed: Seed for initialisation, batches and negatives.
        negatives: ``all_known`` excludes the user's train, valid and test items (the
            authors' code); ``train_only`` excludes training items only (MMRec).
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.
        keep_checkpoints: What a completed run keeps on disk: ``best`` (the best validation
            weights), ``last`` (the resumable state), ``all`` (both) or ``none``.
        checkpoint_minutes: Write the resumable checkpoint after the first epoch that ends
            this many minutes (of wall time) after the previous one, and at the end when
            ``keep_checkpoints`` keeps it; 0 writes it after every epoch.
    """

    epochs: int = 2000
    patience: int = 20
    batch_size: int = 2048
    lr: float = 5e-5
    seed: int = 2025
    negatives: Literal["all_known", "train_only"] = "all_known"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    keep_checkpoints: Literal["best", "last", "all", "none"] = "best"
    checkpoint_minutes: float = 10.0

    def __post_init__(self):
        check(self.epochs >= 1, "train.epochs", "must be >= 1")
        check(self.patience >= 0, "train.patience", "must be >= 0")
        check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        check(self.lr > 0, "train.lr", "must be > 0")
        check(self.checkpoint_minutes >= 0, "train.checkpoint_minutes", "must be >= 0")
        check(math.isfinite(self.lr), "train.lr", f"must be finite, got {self.lr}")
        check_seed("train.seed", self.seed)


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings.

    Attributes:
        topk: Cut-offs K for every metric.
        batch_size: Users scored per evaluation batch.
        metric: The validation metric that early stopping and tuning select on.
        stop_decimals: Round the validation metric to this many decimals before early
            stopping compares it (MMRec and the authors' code use 4); None compares raw values.
    """

    topk: tuple[int, ...] = (10, 20)
    batch_size: int = 8192
    metric: str = "Recall@20"
    stop_decimals: int | None = None

    def __post_init__(self):
        check(len(self.topk) > 0 and all(k >= 1 for k in self.topk), "eval.topk",
               "must be a non-empty list of positive integers, e.g. [10, 20]")
        check(self.batch_size >= 1, "eval.batch_size", "must be >= 1")
        name, _, k = self.metric.partition("@")
        check(name in ("Recall", "NDCG", "Precision", "MAP") and k.isdigit()
               and int(k) in self.topk, "eval.metric",
               f"must be one of Recall/NDCG/Precision/MAP @ a K in eval.topk {list(self.topk)}, "
               f"e.g. Recall@20; got {self.metric!r}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one training run."""

    model: str
    data: DataConfig
    graph: GraphConfig
    params: Any  # the model's own config dataclass; YAML section named after the model
    train: TrainConfig
    eval: EvalConfig

    def sections(self) -> dict[str, Any]:
        """Section name -> dataclass instance, in YAML order."""
        return {"data": self.data, "graph": self.graph, self.model: self.params,
                "train": self.train, "eval": self.eval}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model}
        for name, section in self.sections().items():
            out[name] = {f.name: plain(getattr(section, f.name)) for f in fields(section)}
        return out

    def flat(self) -> dict[str, Any]:
        """``section.field -> value`` for every field (for hparams and tables)."""
        return {f"{s}.{k}": v for s, d in self.to_dict().items() if isinstance(d, dict)
                for k, v in d.items()}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        from rearm_dgl.io_utils import atomic_write_text

        atomic_write_text(path, self.to_yaml())


def check(ok: bool, key: str, message: str) -> None:
    """Raise :class:`ConfigError` ``"<key>: <message>"`` unless ``ok`` (config validation)."""
    if not ok:
        raise ConfigError(f"{key}: {message}", key=key)


def check_seed(key: str, seed: int) -> None:
    """A seed must be an integer in ``0..SEED_MAX``, the range every generator we seed takes."""
    check(isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= SEED_MAX, key,
          f"must be an integer from 0 to {SEED_MAX} (2**32 - 1), got {seed!r}")


def plain(value: Any) -> Any:
    """A config value as YAML/JSON writes it (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value


# ---------------------------------------------------------------------------------------
# Building and overriding


def section_classes(model: str) -> dict[str, type]:
    """YAML section name -> config dataclass for a run of ``model``, in YAML order.

    ``model`` may be any spelling the registry accepts; the section is its registered name.
    """
    from rearm_dgl.models import registry

    cls = registry.get(model)
    return {"data": DataConfig, "graph": GraphConfig, cls.name: cls.config_cls,
            "train": TrainConfig, "eval": EvalConfig}


def preset(model: str, dataset: str) -> dict[str, Any]:
    """The shipped preset for ``model`` on ``dataset`` as a nested dict (may be empty).

    Presets live in ``rearm_dgl/presets/<model>.yaml``: a ``default`` entry, applied to
    every dataset, then one entry per dataset name (``baby``, ``sports``, ...).
    """
    try:
        text = resources.files("rearm_dgl.presets").joinpath(f"{model}.yaml").read_text()
    except FileNotFoundError:
        return {}
    table = yaml.safe_load(text) or {}
    name = Path(dataset).name.lower() if dataset else ""
    merged: dict[str, Any] = {}
    for key in ("default", name):
        _deep_update(merged, table.get(key) or {})
    return merged


def _deep_update(dst: dict, src: dict) -> dict:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v
    return dst


def build_config(
    model: str = "rearm",
    dataset: str | None = None,
    file: str | Path | None = None,
    overrides: typing.Sequence[str] = (),
    use_preset: bool = True,
    mapping: dict[str, Any] | None = None,
) -> RunConfig:
    """Resolve a :class:`RunConfig`: defaults -> preset -> YAML file -> ``key=value`` list.

    Args:
        model: Model name, in any spelling the registry accepts (``mf``, ``BPR``,
            ``LightGCN``); a ``model:`` key in the file wins over it.
        dataset: Dataset name or path; wins over the file's ``data.dataset``.
        file: Optional YAML file with the layout of ``RunConfig.to_dict()``.
        overrides: ``section.field=value`` strings (values parsed as YAML).
        use_preset: Apply the shipped preset for (model, dataset).
        mapping: A nested dict used instead of ``file`` (same layout).

    Raises:
        ConfigError: for an unknown model, section or key, or a bad value; a problem in
            ``file`` names the file.
    """
    file_dict: dict[str, Any] = dict(mapping or {})
    origin = "config" if mapping is not None else str(file)
    if file is not None:
        file_dict = read_yaml(file, "config file not found; check the --config path") or {}
        if not isinstance(file_dict, dict):
            raise ConfigError(f"{file}: expected a mapping of sections at the top level")
    from rearm_dgl.models import registry

    model_from = f"{origin}: model" if "model" in file_dict else "model"  # for the message
    model = file_dict.get("model", model)
    pairs = [parse_override(o) for o in overrides]
    for key, value in pairs:
        if key == "model":
            model, model_from = value, "--set model"
    model = registry.canonical(str(model), where=model_from)  # BPR -> mf, LightGCN -> lightgcn
    classes = section_classes(model)

    dataset = dataset or _nested_get(file_dict, "data", "dataset") or "demo"
    for key, value in pairs:
        if key in ("data.dataset", "dataset"):
            dataset = str(value)

    layers: list[tuple[str, dict]] = []
    if use_preset:
        layers.append((f"preset {model}/{Path(dataset).name}", preset(model, dataset)))
    if file_dict:
        layers.append((origin, file_dict))

    values: dict[str, dict[str, Any]] = {section: {} for section in classes}
    sources: dict[str, str] = {}  # section.field -> the file or preset that set it last
    for origin, layer in layers:
        for section, body in layer.items():
            if section == "model":
                continue
            if section not in classes:
                raise ConfigError(
                    f"{origin}: unknown section {section!r}; "
                    f"{_suggest_section(str(section), classes)}expected one of "
                    f"{sorted(classes)} (the model section is named after the model)")
            if not isinstance(body, dict):
                raise ConfigError(f"{origin}: section {section!r} must be a mapping")
            for key, value in body.items():
                if f"{section}.{key}" in RETIRED_KEYS:
                    log.warning("%s: %s.%s is no longer used: %s", origin, section, key,
                                RETIRED_KEYS[f"{section}.{key}"])
                    continue
                try:
                    _, name = _resolve_key(f"{section}.{key}", classes)
                    values[section][name] = _coerce(classes[section], name, value,
                                                    f"{section}.{name}")
                except ConfigError as exc:
                    raise ConfigError(f"{origin}: {exc}", key=exc.key) from None
                sources[f"{section}.{name}"] = origin
    for key, value in pairs:
        if key == "model":
            continue
        if key in RETIRED_KEYS:
            raise ConfigError(f"--set {key}: no longer exists; {RETIRED_KEYS[key]}")
        section, name = _resolve_key(key, classes)
        values[section][name] = _coerce(classes[section], name, value, f"{section}.{name}")
        sources.pop(f"{section}.{name}", None)
    values["data"]["dataset"] = dataset

    try:
        return RunConfig(
            model=model,
            data=DataConfig(**values["data"]),
            graph=GraphConfig(**values["graph"]),
            params=classes[model](**values[model]),
            train=TrainConfig(**values["train"]),
            eval=EvalConfig(**values["eval"]),
        )
    except TypeError as exc:  # a dataclass rejected a keyword
        raise ConfigError(str(exc)) from None
    except ConfigError as exc:  # a value check failed: name the file that set the value
        if exc.key in sources:
            raise ConfigError(f"{sources[exc.key]}: {exc}", key=exc.key) from None
        raise


def check_against_data(cfg: RunConfig, data: Any) -> None:
    """Check the settings whose valid range depends on the loaded dataset.

    A cut-off in ``eval.topk`` above the item count is refused: every item would be in the
    top K and the metric would say nothing. A kNN size above the user or item count only logs
    a warning, since the graph builders cap it (legal on tiny data) but the setting does not
    mean what it says.

    Args:
        cfg: The run config.
        data: The loaded dataset (``n_users``, ``n_items`` and ``name`` are read).

    Raises:
        ConfigError: naming ``eval.topk``, the item count and the fix.
    """
    too_big = [k for k in cfg.eval.topk if k > data.n_items]
    check(not too_big, "eval.topk",
          f"cut-off(s) {too_big} exceed the {data.n_items} items of dataset {data.name!r}, so "
          f"every item would be in the top K; use cut-offs up to {data.n_items}, e.g. "
          f"--set eval.topk=[{min(10, data.n_items)}]")
    from rearm_dgl.models import registry

    if not getattr(registry.get(cfg.model), "needs_graph", True):
        return
    for key, k, n, kind in (("graph.user_knn_k", cfg.graph.user_knn_k, data.n_users, "users"),
                            ("graph.item_knn_k", cfg.graph.item_knn_k, data.n_items, "items")):
        if k > n:
            log.warning("%s=%d exceeds the %d %s of dataset %r: neighbour lists are cut at "
                        "%d; set %s to at most %d to say what the graph holds",
                        key, k, n, kind, data.name, n, key, n)


def config_from_dict(d: dict[str, Any]) -> RunConfig:
    """Rebuild a saved config exactly (no preset), e.g. from a checkpoint or config.yaml."""
    if "model" not in d:
        raise ConfigError("saved config has no 'model' key; is this a rearm-dgl config?")
    return build_config(mapping=d, use_preset=False)


def load_config(path: str | Path) -> RunConfig:
    """Load a saved ``config.yaml`` exactly as written (no preset applied)."""
    return build_config(file=path, use_preset=False)


def with_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A copy of ``cfg`` with ``{"section.field": value}`` applied and checked."""
    classes = {name: type(section) for name, section in cfg.sections().items()}
    changed: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        section, name = _resolve_key(key, classes)
        changed.setdefault(section, {})[name] = _coerce(classes[section], name, value, key)
    new_sections = {s: replace(obj, **changed.get(s, {})) for s, obj in cfg.sections().items()}
    return RunConfig(model=cfg.model, data=new_sections["data"], graph=new_sections["graph"],
                     params=new_sections[cfg.model], train=new_sections["train"],
                     eval=new_sections["eval"])


def field_names(cfg_or_classes) -> dict[str, type]:
    """``section.field -> type`` for every field of a config (used to check search spaces)."""
    sections = cfg_or_classes.sections() if isinstance(cfg_or_classes, RunConfig) else cfg_or_classes
    out = {}
    for s, obj in sections.items():
        hints = typing.get_type_hints(obj if isinstance(obj, type) else type(obj))
        for f in fields(obj):
            out[f"{s}.{f.name}"] = hints[f.name]
    return out


def _nested_get(d: dict, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def read_yaml(path: str | Path, missing: str) -> Any:
    """Parse a YAML file; :class:`ConfigError` naming the file if it is absent or invalid.

    Args:
        path: The file.
        missing: The problem and fix to report when the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {missing}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); fix the syntax") from None


def parse_override(text: str) -> tuple[str, Any]:
    """``"section.field=value"`` -> ``(key, value)`` with the value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set train.lr=1e-3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _resolve_key(key: str, classes: dict[str, type]) -> tuple[str, str]:
    """``section.field`` (or a bare field naming one field) -> ``(section, field)``.

    This is the one place where config keys are checked: ``--set``, YAML files, experiment
    ``set:`` and variants all come through here.
    """
    if "." in key:
        section, name = key.split(".", 1)
        if section not in classes:
            raise ConfigError(f"{key}: unknown section {section!r}; {suggest_key(key, classes)}"
                              f"sections are {sorted(classes)}", key=key)
        if name not in {f.name for f in fields(classes[section])}:
            raise ConfigError(f"{key}: unknown field; {suggest_key(key, classes)}{section} has "
                              f"{sorted(f.name for f in fields(classes[section]))}", key=key)
        return section, name
    hits = [s for s, c in classes.items() if key in {f.name for f in fields(c)}]
    if len(hits) == 1:
        return hits[0], key
    if not hits:
        raise ConfigError(f"{key}: unknown config key; {suggest_key(key, classes)}write "
                          f"section.field (`rearm-dgl models` lists the fields)", key=key)
    raise ConfigError(f"{key}: ambiguous, it is a field of {hits}; write section.field, "
                      f"e.g. {hits[-1]}.{key}", key=key)


def suggest_key(key: str, classes: dict[str, type]) -> str:
    """``"did you mean train.lr? "`` for an unknown ``key``, or ``""`` if nothing is close.

    MMRec's and RecBole's names (:data:`FOREIGN_KEYS`) map to ours; other keys get the
    closest known ``section.field`` by :func:`difflib.get_close_matches`.
    """
    name = key.split(".", 1)[-1]
    full = {f"{s}.{f.name}": f.name for s, c in classes.items() for f in fields(c)}
    if name in FOREIGN_KEYS and FOREIGN_KEYS[name] in full:
        return f"did you mean {FOREIGN_KEYS[name]}? (MMRec and RecBole call it {name}) "
    if "." in key:
        close = difflib.get_close_matches(key, list(full), n=1)
    else:  # a bare name: compare with bare names, suggest the full key
        by_name: dict[str, list[str]] = {}
        for k, n in full.items():
            by_name.setdefault(n, []).append(k)
        close = [by_name[c][-1] for c in difflib.get_close_matches(key, list(by_name), n=1)]
    return f"did you mean {close[0]}? " if close else ""


def _suggest_section(section: str, classes: dict[str, type]) -> str:
    close = difflib.get_close_matches(section, list(classes), n=1)
    return f"did you mean {close[0]}? " if close else ""


def _coerce(cls: type, name: str, value: Any, where: str) -> Any:
    """Check ``value`` against the type of field ``name`` of ``cls`` and convert it."""
    known = {f.name: f for f in fields(cls)}
    if name not in known:
        raise ConfigError(f"{where}: unknown field; {cls.__name__} has {sorted(known)}")
    hint = typing.get_type_hints(cls)[name]
    try:
        return _coerce_type(hint, value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _coerce_type(hint: Any, value: Any) -> Any:
    origin = get_origin(hint)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ValueError(f"must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in get_args(hint):
            if arm is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce_type(arm, value)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        arms = get_args(hint)
        inner = arms[0] if arms else Any
        return tuple(_coerce_type(inner, v) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError(f"must be an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number, got {value!r}")
        if math.isnan(value):
            raise ValueError("must be a number, got NaN")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"must be a string, got {value!r}")
        return str(value)
    if hint is Any:
        return value
    if is_dataclass(hint):
        raise TypeError("nested config sections are not supported")
    return value


__all__ = [
    "ConfigError", "DataConfig", "EvalConfig", "GraphConfig", "RunConfig", "TrainConfig",
    "build_config", "check", "check_against_data", "check_seed", "config_from_dict", "field",
    "field_names", "load_config", "parse_override", "plain", "preset", "read_yaml",
    "section_classes", "suggest_key", "with_overrides", "FOREIGN_KEYS", "NEGATIVE_MODES",
    "DEVICES", "SEED_MAX",
]
