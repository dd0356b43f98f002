"""Search spaces and experiment files shipped with the package.

``<model>.yaml`` is a model's default search space for ``rearm-dgl tune``; ``main.yaml``,
``ablation.yaml``, ``sensitivity.yaml`` (and their ``_tiny`` versions on the demo data) are
the experiment files behind the paper-style report.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def shipped_file(name: str) -> Path | None:
    """The shipped file ``name`` (e.g. ``rearm.yaml``), or None when none ships."""
    path = FOLDER / name
    return path if path.is_file() else None


def resolve(path: str | Path) -> Path:
    """A user's file as given when it exists, else the shipped file of that name.

    ``rearm-dgl experiment run main_tiny.yaml`` (or ``studies/main_tiny.yaml``) then works
    from any folder; a path that exists always wins.
    """
    path = Path(path)
    if path.exists() or path.parent not in (Path("."), Path("studies")):
        return path
    return shipped_file(path.name) or path


__all__ = ["FOLDER", "resolve", "shipped_file"]
