"""Name -> model class. Models register themselves with :func:`register`; :func:`get`
imports the built-in model modules on first use."""

from __future__ import annotations

import importlib

from rearm_dgl.errors import ConfigError

_MODELS: dict[str, type] = {}
_BUILTIN = ("rearm", "mf", "lightgcn", "vbpr", "freedom", "bm3", "slmrec", "lgmrec")


def register(cls: type) -> type:
    """Class decorator: register a :class:`~rearm_dgl.models.base.Recommender` by its ``name``."""
    name = cls.name
    if name in _MODELS and _MODELS[name] is not cls:
        raise ValueError(f"model name {name!r} registered twice")
    _MODELS[name] = cls
    return cls


def _load_builtins() -> None:
    for module in _BUILTIN:
        try:
            importlib.import_module(f"rearm_dgl.models.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"rearm_dgl.models.{module}":
                raise


def names() -> list[str]:
    _load_builtins()
    return sorted(_MODELS)


def get(name: str) -> type:
    _load_builtins()
    if name not in _MODELS:
        raise ConfigError(f"model: unknown model {name!r}; choose one of {sorted(_MODELS)} "
                          f"(`rearm-dgl models` lists them)")
    return _MODELS[name]
