"""Experiment files: models x datasets x variants x seeds, run cell by cell.

An experiment is a YAML file::

    name: main                        # default: the file name without .yaml
    models: [mf, lightgcn, rearm]
    datasets: [baby, sports]
    seeds: [1, 2, 3, 4, 5]
    set: {train.epochs: 1000}         # overrides for every cell
    variants:                         # optional: name -> overrides (e.g. ablations)
      full: {}
      no_cl: {rearm.use_cl: false}
    labels: {no_cl: "w/o CL"}         # optional display names of variants
    sweep: {graph.user_knn_k: [10, 20, 40]}   # optional: one or two parameters, as a grid
    runs_dir: runs                    # default: runs

It expands to cells (model, dataset, variant, seed). A sweep makes one variant per point of
its grid (crossed with ``variants`` when both are given). Override keys are
``section.field``; a key whose section is another model's name (``rearm.n_layers`` in an MF
cell) is skipped, so one file can tune several models.

Each cell has a fixed run directory ``<runs_dir>/<name>/<dataset>/<model>/<variant>/s<seed>/``
holding the normal run artifacts plus the bookkeeping files ``cell.json`` (which cell it is)
and ``error.json`` (the last failure). A cell is *done* when its ``results.json`` says
``completed`` and its config and data fingerprints are the cell's; a done cell is never run
again. Which process runs a cell is decided by a claim (:mod:`rearm_dgl.experiments.store`).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rearm_dgl.config import read_yaml
from rearm_dgl.errors import ConfigError, DataError
from rearm_dgl.models.registry import canonical as canonical_model

CELL_FILE = "cell.json"
ERROR_FILE = "error.json"
RESULTS_FILE = "results.json"
BOOKKEEPING = (CELL_FILE, ERROR_FILE)
DEFAULT_VARIANT = "default"

_KEYS = {"name", "models", "datasets", "seeds", "set", "variants", "labels", "sweep",
         "runs_dir", "description"}
_SAFE = re.compile(r"[^A-Za-z0-9._=,+-]")


@dataclass(frozen=True)
class Cell:
    """One (model, dataset, variant, seed) of an experiment.

    Attributes:
        model: Registered model name.
        dataset: Dataset name or directory, as written in the experiment file.
        variant: Variant name (``default`` when the file has no variants or sweep).
        seed: ``train.seed`` of the run.
        overrides: The variant's own overrides (sweep point included), ``section.field`` keys.
        sweep: The sweep point ``{section.field: value}`` (empty outside sweeps).
    """

    model: str
    dataset: str
    variant: str
    seed: int
    overrides: tuple[tuple[str, Any], ...] = ()
    sweep: tuple[tuple[str, Any], ...] = ()

    @property
    def dataset_name(self) -> str:
        """The dataset's folder name under the runs directory (``demo``, ``baby``, ...)."""
        from rearm_dgl.tracking import dataset_label

        return dataset_label(self.dataset)

    @property
    def key(self) -> str:
        """``<dataset>/<model>/<variant>/s<seed>``: the cell's name within its experiment."""
        return f"{self.dataset_name}/{self.model}/{_safe_name(self.variant)}/s{self.seed}"

    @property
    def group(self) -> tuple[str, str, str]:
        """The cell without its seed: runs in one group differ only by seed."""
        return (self.dataset_name, self.model, self.variant)


@dataclass
class Experiment:
    """A parsed experiment file (see the module docstring for the format)."""

    name: str
    models: list[str]
    datasets: list[str]
    seeds: list[int]
    set: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    runs_dir: Path = Path("runs")
    source: Path | None = None
    description: str = ""

    @property
    def kind(self) -> str:
        """``sweep``, ``ablation`` (has variants) or ``comparison``."""
        if self.sweep:
            return "sweep"
        if self.variants:
            return "ablation"
        return "comparison"

    def variant_points(self) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """``(variant name, overrides, sweep point)`` for every variant, in file order."""
        base = list(self.variants.items()) or [(DEFAULT_VARIANT, {})]
        if not self.sweep:
            return [(name, dict(ov), {}) for name, ov in base]
        keys = list(self.sweep)
        out = []
        for name, ov in base:
            for values in itertools.product(*(self.sweep[k] for k in keys)):
                point = dict(zip(keys, values))
                label = ",".join(f"{k.rsplit('.', 1)[-1]}={_fmt_value(v)}"
                                 for k, v in point.items())
                vname = label if not self.variants else f"{name}+{label}"
                out.append((_safe_name(vname), {**ov, **point}, point))
        return out

    def cells(self) -> list[Cell]:
        """Every cell, ordered dataset, model, variant, seed."""
        points = self.variant_points()
        return [Cell(model, dataset, vname, int(seed), tuple(ov.items()), tuple(point.items()))
                for dataset in self.datasets for model in self.models
                for vname, ov, point in points for seed in self.seeds]

    def run_dir(self, cell: Cell) -> Path:
        """``<runs_dir>/<name>/<dataset>/<model>/<variant>/s<seed>``."""
        from rearm_dgl.tracking import dataset_label

        return (self.runs_dir / self.name / dataset_label(cell.dataset) / cell.model
                / _safe_name(cell.variant) / f"s{cell.seed}")

    def label(self, variant: str) -> str:
        return self.labels.get(variant, variant)

    def config(self, cell: Cell):
        """The resolved :class:`~rearm_dgl.config.RunConfig` of a cell.

        Preset for (model, dataset), then ``set``, then the variant's overrides, then the seed.
        """
        from rearm_dgl.config import build_config, with_overrides

        try:
            cfg = build_config(model=cell.model, dataset=cell.dataset)
            merged = {**self.set, **dict(cell.overrides)}
            applicable = {k: v for k, v in merged.items() if _applies(k, cell.model)}
            applicable["train.seed"] = cell.seed
            return with_overrides(cfg, applicable)
        except ConfigError as exc:
            raise ConfigError(f"{self.source or self.name}: cell {cell.model}/{cell.dataset}/"
                              f"{cell.variant}: {exc}") from None

    def cell_info(self, cell: Cell) -> dict[str, Any]:
        """What ``cell.json`` records about a cell."""
        return {"experiment": self.name, "kind": self.kind, "model": cell.model,
                "dataset": cell.dataset_name, "variant": cell.variant,
                "label": self.label(cell.variant), "seed": cell.seed,
                "overrides": dict(cell.overrides), "sweep": dict(cell.sweep),
                "set": dict(self.set),
                "experiment_file": self.source_label}

    @property
    def source_label(self) -> str:
        """The file as a user names it: a shipped file by its name (it resolves from any
        folder), any other by its path."""
        from rearm_dgl.studies import FOLDER

        if self.source is None:
            return ""
        if Path(self.source).resolve().parent == FOLDER:
            return Path(self.source).name
        return str(self.source)


def _applies(key: str, model: str) -> bool:
    """False for a key that belongs to another model's section (``rearm.x`` in an MF cell)."""
    from rearm_dgl.models import registry

    section = key.split(".", 1)[0] if "." in key else ""
    return not (section and section != model and section in registry.names())


def _fmt_value(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def _safe_name(text: str) -> str:
    return _SAFE.sub("_", text) or "_"


# ---------------------------------------------------------------------------------------
# Loading and checking


def load_experiment(path: str | Path, runs_dir: str | Path | None = None) -> Experiment:
    """Parse and check an experiment file.

    Every cell's config is resolved here, so an unknown model, key or bad value is an error
    before anything runs. Datasets are checked by :func:`check_datasets`.

    Args:
        path: The YAML file; a name that is not a file here, such as ``main_tiny.yaml`` or
            ``studies/main_tiny.yaml``, is the experiment file shipped with the package.
        runs_dir: Overrides the file's ``runs_dir``.

    Raises:
        ConfigError: naming the file and the field for any problem.
    """
    from rearm_dgl.studies import resolve

    path = resolve(path)
    raw = read_yaml(path, "experiment file not found; check the path, or name a shipped one "
                          "(main.yaml, ablation.yaml, sensitivity.yaml and their _tiny "
                          "versions)") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with models, datasets and seeds")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; allowed: {sorted(_KEYS)}")

    def need_list(key: str, kind: type) -> list:
        value = raw.get(key)
        if value is None:
            raise ConfigError(f"{path}: '{key}' is missing; give a list, e.g. {key}: [...]")
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{path}: '{key}' must be a non-empty list, got {value!r}")
        bad = [v for v in value if not isinstance(v, kind) or isinstance(v, bool)]
        if bad:
            raise ConfigError(f"{path}: '{key}' entries must be {kind.__name__}s; bad: {bad}")
        if len(set(value)) != len(value):
            raise ConfigError(f"{path}: '{key}' lists a value twice: {value}")
        return value

    def mapping(key: str) -> dict:
        value = raw.get(key) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: '{key}' must be a mapping, got {value!r}")
        return value

    models = [canonical_model(m, where=f"{path}: models") for m in need_list("models", str)]
    datasets = need_list("datasets", str)
    seeds = need_list("seeds", int)
    variants = mapping("variants")
    for vname, ov in variants.items():
        if ov is None:
            variants[vname] = {}
        elif not isinstance(ov, dict):
            raise ConfigError(f"{path}: variants.{vname} must be a mapping of "
                              f"section.field: value (use {{}} for the unchanged model)")
    sweep = mapping("sweep")
    if len(sweep) > 2:
        raise ConfigError(f"{path}: sweep has {len(sweep)} parameters; use one or two")
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: sweep.{key} must be a non-empty list of values")
    labels = {str(k): str(v) for k, v in mapping("labels").items()}
    name = str(raw.get("name") or path.stem)
    exp = Experiment(
        name=_safe_name(name), models=models, datasets=datasets, seeds=[int(s) for s in seeds],
        set=mapping("set"), variants={str(k): v for k, v in variants.items()}, labels=labels,
        sweep=sweep, source=path, description=str(raw.get("description") or ""),
        runs_dir=Path(runs_dir if runs_dir is not None else raw.get("runs_dir") or "runs"))
    for key in exp.set:
        if key.split(".", 1)[0] in ("model",) or key in ("train.seed", "data.dataset"):
            raise ConfigError(f"{path}: set.{key}: models, datasets and seeds are given by "
                              f"the 'models', 'datasets' and 'seeds' lists")
    # Resolve every distinct (model, dataset, variant) once: a typo fails here, not mid-run.
    seen = set()
    for cell in exp.cells():
        if cell.group not in seen:
            seen.add(cell.group)
            exp.config(cell)
    return exp


def check_datasets(exp: Experiment) -> dict[str, str]:
    """Load every dataset of ``exp`` once and return ``{dataset: data fingerprint}``.

    Raises:
        DataError: for a dataset that is unknown or malformed (before any cell runs).
    """
    return {d: _load_data(exp, d).fingerprint for d in exp.datasets}


def _load_data(exp: Experiment, dataset: str):
    from rearm_dgl.data import load_dataset

    cell = Cell(exp.models[0], dataset, DEFAULT_VARIANT, exp.seeds[0])
    cfg = exp.config(cell)
    try:
        return load_dataset(cfg.data)
    except DataError as exc:
        raise DataError(exc.path, f"{exc.problem} (dataset {dataset!r} of experiment "
                                  f"{exp.source or exp.name})", exc.fix) from None

