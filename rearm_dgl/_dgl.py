"""The one place that imports DGL.

DGL 2.1.0 is the newest release on PyPI. It was built for torch <= 2.2.1 and no longer
imports cleanly on current torch, for three reasons:

1. ``dgl.utils`` falls back to ``setuptools.extern.packaging`` when ``packaging`` is
   missing, and current setuptools no longer ships ``setuptools.extern``.
2. ``import dgl`` imports ``dgl.distributed``, which imports ``dgl.graphbolt``, which needs
   ``torchdata.datapipes`` (removed from torchdata 0.10) ...
3. ... and loads a C++ library built for one exact torch version, which fails on any other.

rearm-dgl uses neither graphbolt nor ``dgl.distributed``. So, only where DGL's own
libraries do not match the installed torch, this module registers a placeholder
``dgl.graphbolt`` module before importing DGL; any use of it raises a clear error. Where
DGL's graphbolt library for this torch exists and ``torchdata.datapipes`` imports, nothing
is patched. Every other module of rearm-dgl imports DGL from here:

    from rearm_dgl._dgl import dgl, fn
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch

__all__ = ["dgl", "fn", "GRAPHBOLT_STUBBED", "graphbolt_available"]


def _dgl_package_dir() -> Path:
    spec = importlib.util.find_spec("dgl")
    if spec is None or spec.origin is None:
        raise ImportError(
            "DGL is not installed. Install it with `pip install dgl==2.1.0` "
            "(or `pip install -e .` in the rearm-dgl checkout)."
        )
    return Path(spec.origin).parent


def graphbolt_available(dgl_dir: Path | None = None) -> bool:
    """Whether DGL's own graphbolt can load with the installed torch."""
    dgl_dir = dgl_dir or _dgl_package_dir()
    version = torch.__version__.split("+", maxsplit=1)[0]
    if not (dgl_dir / "graphbolt" / f"libgraphbolt_pytorch_{version}.so").exists():
        return False
    try:
        return importlib.util.find_spec("torchdata.datapipes") is not None
    except ModuleNotFoundError:
        return False


def _install_packaging_shim() -> None:
    """Point ``setuptools.extern.packaging`` at ``packaging`` if the former is gone."""
    try:
        import setuptools.extern.packaging  # noqa: F401

        return
    except ImportError:
        pass
    import packaging
    import packaging.version

    extern = types.ModuleType("setuptools.extern")
    extern.packaging = packaging
    sys.modules.setdefault("setuptools.extern", extern)
    sys.modules.setdefault("setuptools.extern.packaging", packaging)
    sys.modules.setdefault("setuptools.extern.packaging.version", packaging.version)


def _install_graphbolt_placeholder() -> None:
    placeholder = types.ModuleType("dgl.graphbolt")
    placeholder.__doc__ = "Placeholder: graphbolt is unavailable with this torch (see rearm_dgl._dgl)."

    def __getattr__(name: str):
        raise AttributeError(
            f"dgl.graphbolt.{name} is unavailable: DGL 2.1.0 ships no graphbolt library for "
            f"torch {torch.__version__}. rearm-dgl does not use graphbolt."
        )

    placeholder.__getattr__ = __getattr__
    sys.modules["dgl.graphbolt"] = placeholder


GRAPHBOLT_STUBBED = False
if "dgl" not in sys.modules:
    _install_packaging_shim()
    if not graphbolt_available():
        _install_graphbolt_placeholder()
        GRAPHBOLT_STUBBED = True

import dgl  # noqa: E402
import dgl.function as fn  # noqa: E402
