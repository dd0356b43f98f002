"""What a study is: its name, folder layout and the settings it was created with.

The study remembers its model, dataset, space and ``--set`` values (study user attribute
``rearm_dgl``); running the same command again resumes it, and asking for different settings
under the same study name is an error (:func:`check_resume`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rearm_dgl.errors import RearmError

JOURNAL_FILE = "journal.log"
TRIALS_DIR = "trials"
TRIALS_CSV = "trials.csv"
BEST_YAML = "best.yaml"
PLOTS_DIR = "plots"
TENSORBOARD_DIR = "tensorboard"
#: Study user attribute holding the settings the study was created with.
STUDY_ATTR = "rearm_dgl"

_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class StudyError(RearmError):
    """A study cannot be created, resumed or summarised as asked (storage, budget, settings)."""


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


def study_dir(studies_dir: str | Path, name: str) -> Path:
    """``<studies_dir>/<name>``: the study's folder."""
    return Path(studies_dir) / name


def check_name(name: str) -> None:
    """Refuse a study name that is not a plain folder name."""
    if not _STUDY_NAME.match(name):
        raise StudyError(f"--study {name!r}: use letters, digits, '.', '_' and '-' only "
                         f"(it names a folder under the studies directory)")


def check_resume(name: str, where: str, stored: StudySettings, asked: StudySettings) -> None:
    """Refuse to resume study ``name`` (in storage ``where``) with other settings."""
    diffs = []
    for attr in ("model", "dataset", "metric", "fixed", "space"):
        a, b = getattr(stored, attr), getattr(asked, attr)
        if json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            diffs.append(f"{attr}: stored {a!r}, asked {b!r}")
    if diffs:
        raise StudyError(f"study {name!r} in {where} was created with other "
                         f"settings ({'; '.join(diffs)}). Rerun with the original settings to "
                         f"resume it, or choose a new --study name")
