"""Name -> model class. Models register themselves with :func:`register`; :func:`get`
imports the built-in model modules on first use.

Every place that accepts a model name (``train -m``, ``models``, experiment files,
``tune --model``, a config's ``model:``) resolves it through :func:`canonical`: names match
case-insensitively, and MMRec's model names are aliases (``BPR`` is ``mf``; ``FREEDOM``,
``LightGCN``, ``VBPR`` and any model registered later match by case alone).
"""

from __future__ import annotations

import importlib

from rearm_dgl.errors import ConfigError

_MODELS: dict[str, type] = {}
_BUILTIN = ("rearm", "mf", "lightgcn", "vbpr", "freedom", "lattice", "dragon", "mgcn", "bm3",
            "slmrec", "lgmrec")


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
    """The registered model names, sorted."""
    _load_builtins()
    return sorted(_MODELS)


#: MMRec (and RecBole) model names that differ from ours by more than letter case.
ALIASES = {"bpr": "mf", "bprmf": "mf"}


def canonical(name: str, where: str = "model") -> str:
    """The registered name for ``name``: ``"BPR"`` -> ``"mf"``, ``"LightGCN"`` -> ``"lightgcn"``.

    Args:
        name: A model name in any accepted spelling.
        where: What the error message starts with (the option, or the file and field).

    Raises:
        ConfigError: no model has that name, naming the choices.
    """
    _load_builtins()
    if name in _MODELS:
        return name
    folded = {registered.casefold(): registered for registered in _MODELS}
    key = str(name).casefold()
    key = ALIASES.get(key, key)
    if key in folded:
        return folded[key]
    raise ConfigError(f"{where}: unknown model {name!r}; choose one of {sorted(_MODELS)} "
                      f"(`rearm-dgl models` lists them; MMRec's names such as BPR or "
                      f"LightGCN work too)", key="model")


def get(name: str) -> type:
    """The model class registered as ``name`` (any spelling :func:`canonical` accepts)."""
    return _MODELS[canonical(name)]
