"""Search spaces: which config fields a study varies, and how (the only ``trial.suggest_*``).

A space is a YAML file mapping config keys ``section.field`` to ``{type: float, low, high,
log, step}``, ``{type: int, low, high, step, log}`` or ``{type: categorical, choices:
[...]}``. Every key must be an existing config field of the model. The default space of a
model ships with the package (``rearm_dgl/studies/<model>.yaml``, :func:`default_space`).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import optuna

from rearm_dgl.config import (
    RunConfig,
    field_names,
    plain,
    read_yaml,
    section_classes,
    with_overrides,
)
from rearm_dgl.errors import ConfigError
from rearm_dgl.studies import shipped_file

SPACE_TYPES = ("float", "int", "categorical")
#: Sections a space may not vary: they define what is measured, not how the model learns.
FROZEN_SECTIONS = ("data", "eval")


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
            return self.rounded(trial.suggest_float(self.key, self.low, self.high,
                                                    step=self.step, log=self.log))
        if self.type == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1,
                                     log=self.log)
        return trial.suggest_categorical(self.key, list(self.choices))

    def rounded(self, value: Any) -> Any:
        """A stepped float on its grid as written (``0.3``, not ``0.30000000000000004``)."""
        if self.type != "float" or not self.step or not isinstance(value, float):
            return value
        return round(value, _decimals(self.step) + _decimals(self.low))

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


def _decimals(x: float) -> int:
    """Digits after the decimal point of ``x`` as written (``0.05`` -> 2)."""
    text = repr(float(x))
    if "e" in text:
        mantissa, exp = text.split("e")
        return max(0, len(mantissa.partition(".")[2].rstrip("0")) - int(exp))
    return len(text.partition(".")[2].rstrip("0"))


def default_space(model: str) -> Path:
    """The search space shipped for ``model`` (``rearm_dgl/studies/<model>.yaml``).

    Raises:
        ConfigError: when the package ships none for this model.
    """
    path = shipped_file(f"{model}.yaml")
    if path is None:
        raise ConfigError(f"no search space ships for model {model!r}; pass --space FILE "
                          f"(same layout as {shipped_file('rearm.yaml')})")
    return path


def load_space(path: str | Path, model: str = "rearm") -> SearchSpace:
    """Read and check a search-space YAML file for ``model``.

    Raises:
        ConfigError: the file is missing or malformed, a key is not a config field of the
            model, or a spec is invalid; the message names the file and the key.
    """
    path = Path(path)
    mapping = read_yaml(path, "search space file not found; check the --space path (leave "
                              "--space out to use the space shipped for the model)")
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

