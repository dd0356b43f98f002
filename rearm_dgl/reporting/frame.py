"""One table of finished runs, read from run directories only.

Every row is a :class:`RunRecord` built from a run's ``results.json``, ``config.yaml``,
``env.json``, ``cell.json`` (written by :mod:`rearm_dgl.experiments`) and
``per_user_test.npz``. The tables and figures are computed from these records alone, so a
report never trains and every number traces back to the run directories it lists.

Provenance rules (a violation raises :class:`~rearm_dgl.errors.DataError` naming the run):

- with an experiment file, a run's config fingerprint must be the one its cell resolves to;
- runs of one group (experiment, dataset, model, variant) share one config fingerprint and
  one data fingerprint, and no seed occurs twice;
- all runs on one dataset share one data fingerprint;
- the per-user test arrays average to the ``results.json`` test metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rearm_dgl.errors import ConfigError, DataError
from rearm_dgl.io_utils import read_json

METRIC_ALIASES = {"R": "Recall", "N": "NDCG", "P": "Precision", "MAP": "MAP"}


@dataclass
class RunRecord:
    """One finished run.

    Attributes:
        run_dir: The run directory.
        experiment: Experiment name (``runs`` for runs made outside an experiment).
        kind: ``comparison``, ``ablation`` or ``sweep`` (see :mod:`rearm_dgl.experiments`).
        dataset, model, variant, seed: The cell.
        label: Display name of the variant.
        sweep: The sweep point ``{section.field: value}``.
        test, valid: Metric name -> value from ``results.json``.
        best_epoch, epochs_run, stop_reason, wall_seconds: From ``results.json``.
        config_fingerprint, data_fingerprint, features_note: Provenance.
        config: The resolved config (``config.yaml``).
        env: ``env.json`` (may be empty).
        n_test_users: Users in ``per_user_test.npz`` (0 when the file is missing).
        experiment_file: The experiment file the run belongs to (may be empty).
    """

    run_dir: Path
    experiment: str
    kind: str
    dataset: str
    model: str
    variant: str
    seed: int
    label: str = ""
    sweep: dict[str, Any] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    valid: dict[str, float] = field(default_factory=dict)
    best_epoch: int | None = None
    epochs_run: int | None = None
    stop_reason: str = ""
    wall_seconds: float | None = None
    config_fingerprint: str = ""
    data_fingerprint: str = ""
    features_note: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    n_test_users: int = 0
    experiment_file: str = ""

    @property
    def group(self) -> tuple[str, str, str, str]:
        """Runs of one group differ only by seed."""
        return (self.experiment, self.dataset, self.model, self.variant)

    def metric(self, name: str, split: str = "test") -> float:
        values = self.test if split == "test" else self.valid
        if name not in values:
            raise DataError(self.run_dir / "results.json", f"no {split} metric {name!r}",
                            f"report metrics that the runs computed ({sorted(values)}); "
                            f"check eval.topk")
        return float(values[name])


@dataclass
class RunFrame:
    """The records of a report plus what was expected but not found."""

    records: list[RunRecord]
    missing: list[Path] = field(default_factory=list)
    experiments: list[Any] = field(default_factory=list)  # loaded Experiment objects
    runs_dir: Path = Path("runs")

    def select(self, **equal: Any) -> list[RunRecord]:
        """Records whose attributes equal the given values."""
        return [r for r in self.records if all(getattr(r, k) == v for k, v in equal.items())]

    def groups(self, records: Iterable[RunRecord] | None = None
               ) -> dict[tuple[str, str, str, str], list[RunRecord]]:
        """Group key -> records sorted by seed, in first-seen order."""
        out: dict[tuple[str, str, str, str], list[RunRecord]] = {}
        for r in self.records if records is None else records:
            out.setdefault(r.group, []).append(r)
        return {k: sorted(v, key=lambda r: r.seed) for k, v in out.items()}

    def experiment_names(self, kind: str | None = None) -> list[str]:
        return list(dict.fromkeys(r.experiment for r in self.records
                                  if kind is None or r.kind == kind))

    def ordered(self, experiment: str, attr: str) -> list[str]:
        """Values of ``attr`` in an experiment, in the experiment file's order when known."""
        exp = next((e for e in self.experiments if e.name == experiment), None)
        seen = list(dict.fromkeys(getattr(r, attr) for r in self.records
                                  if r.experiment == experiment))
        if exp is None:
            return seen
        if attr == "model":
            order = exp.models
        elif attr == "dataset":
            from rearm_dgl.tracking import dataset_label

            order = [dataset_label(d) for d in exp.datasets]
        elif attr == "variant":
            order = [v for v, _, _ in exp.variant_points()]
        else:
            return seen
        return [v for v in order if v in seen] + [v for v in seen if v not in order]


def metric_name(short: str) -> str:
    """``R@20`` -> ``Recall@20``; full names pass through."""
    head, _, k = short.partition("@")
    return f"{METRIC_ALIASES.get(head, head)}@{k}" if k else short


# ---------------------------------------------------------------------------------------
# Reading


def read_run(run_dir: str | Path, cell: dict[str, Any] | None = None) -> RunRecord:
    """Build the record of one finished run directory.

    Raises:
        DataError: when ``results.json`` is missing, not completed, or inconsistent with
            ``per_user_test.npz``.
    """
    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    results = read_json(results_path)
    if results is None:
        raise DataError(results_path, "missing or not valid JSON",
                        "finish the run (rearm-dgl experiment run FILE resumes it) or move the "
                        "directory out of the runs folder")
    if results.get("status") != "completed":
        raise DataError(results_path, f"status is {results.get('status')!r}, not 'completed'",
                        "finish the run or move the directory out of the runs folder")
    cell = cell if cell is not None else (read_json(run_dir / "cell.json") or {})
    for key in ("model", "dataset", "seed", "test", "config_fingerprint", "data_fingerprint"):
        if key not in results:
            raise DataError(results_path, f"has no {key!r}",
                            "this is not a results.json written by rearm-dgl train; re-run it")
    config = {}
    if (run_dir / "config.yaml").is_file():
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    rec = RunRecord(
        run_dir=run_dir,
        experiment=str(cell.get("experiment", "runs")),
        kind=str(cell.get("kind", "comparison")),
        dataset=str(cell.get("dataset", _dataset_label(str(results["dataset"])))),
        model=str(results["model"]),
        variant=str(cell.get("variant", "default")),
        seed=int(results["seed"]),
        label=str(cell.get("label") or cell.get("variant", "default")),
        sweep=dict(cell.get("sweep") or {}),
        test={k: float(v) for k, v in results["test"].items()},
        valid={k: float(v) for k, v in (results.get("valid") or {}).items()},
        best_epoch=results.get("best_epoch"),
        epochs_run=results.get("epochs_run"),
        stop_reason=str(results.get("stop_reason") or ""),
        wall_seconds=results.get("wall_seconds"),
        config_fingerprint=str(results["config_fingerprint"]),
        data_fingerprint=str(results["data_fingerprint"]),
        features_note=str(results.get("features_note") or ""),
        config=config,
        env=read_json(run_dir / "env.json") or {},
        experiment_file=str(cell.get("experiment_file") or ""),
    )
    if cell and cell.get("model") not in (None, rec.model):
        raise DataError(run_dir / "cell.json", f"names model {cell.get('model')!r} but "
                        f"results.json says {rec.model!r}", "move the directory away and re-run")
    _check_per_user(rec)
    return rec


def _check_per_user(rec: RunRecord) -> None:
    path = rec.run_dir / "per_user_test.npz"
    if not path.is_file():
        return
    try:
        with np.load(path) as npz:
            arrays = {k: np.asarray(npz[k]) for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot be read ({exc})", "re-run the run") from None
    users = arrays.pop("users", None)
    rec.n_test_users = int(len(users)) if users is not None else 0
    for name, values in arrays.items():
        if name not in rec.test or values.size == 0:
            continue
        mean = float(np.mean(values, dtype=np.float64))
        if not np.isclose(mean, rec.test[name], rtol=1e-4, atol=1e-6):
            raise DataError(path, f"per-user {name} averages to {mean:.6f} but results.json "
                            f"says {rec.test[name]:.6f}",
                            "the run directory mixes files of different runs; re-run it")


def _dataset_label(dataset: str) -> str:
    from rearm_dgl.tracking import dataset_label

    return dataset_label(dataset)


def collect_runs(runs_dir: str | Path | None = None, experiments: Sequence[str | Path] = (),
                 echo: Callable[[str], None] | None = None) -> RunFrame:
    """Read the finished runs behind a report and check their provenance.

    Args:
        runs_dir: The runs folder (default ``runs``). With experiment files it overrides
            their ``runs_dir`` only when given (not ``None``).
        experiments: Experiment files; when given, exactly their cells are read and each
            run must carry its cell's config fingerprint. Without them, every finished run
            (``results.json`` with status completed) under ``runs_dir`` is read.
        echo: Where notes about skipped runs go.

    Raises:
        DataError: for an empty runs folder or a run that breaks a provenance rule.
        ConfigError: for a bad experiment file.
    """
    say = echo or (lambda _m: None)
    if experiments:
        frame = _collect_experiments(runs_dir, experiments)
    else:
        frame = _collect_all(Path(runs_dir if runs_dir is not None else "runs"), say)
    if not frame.records:
        where = ", ".join(str(e) for e in experiments) if experiments else str(frame.runs_dir)
        raise DataError(frame.runs_dir, f"no finished runs found for {where}",
                        "run the experiment first (rearm-dgl experiment run FILE) or point "
                        "--runs at the folder that holds the run directories")
    check_provenance(frame.records)
    return frame


def _collect_experiments(runs_dir, files: Sequence[str | Path]) -> RunFrame:
    from rearm_dgl.experiments import load_experiment
    from rearm_dgl.tracking import config_fingerprint

    records: list[RunRecord] = []
    missing: list[Path] = []
    loaded = []
    names: dict[str, Path] = {}
    for f in files:
        exp = load_experiment(f, runs_dir)
        if exp.name in names:
            raise ConfigError(f"{f}: experiment name {exp.name!r} is also used by "
                              f"{names[exp.name]}; give one of them another name")
        names[exp.name] = Path(f)
        loaded.append(exp)
        want: dict[tuple, str] = {}
        for cell in exp.cells():
            run_dir = exp.run_dir(cell)
            results = read_json(run_dir / "results.json")
            if results is None or results.get("status") != "completed":
                missing.append(run_dir)
                continue
            key = cell.group
            if key not in want:
                want[key] = config_fingerprint(exp.config(cell))
            if results.get("config_fingerprint") != want[key]:
                raise DataError(
                    run_dir, f"config fingerprint {results.get('config_fingerprint')} differs "
                    f"from the one experiment {exp.name} gives this cell ({want[key]}): the run "
                    f"was made with other settings, so it is not mixed into the report",
                    f"move the directory away and run `rearm-dgl experiment run {f}`, or "
                    f"report it without --experiment")
            records.append(read_run(run_dir, exp.cell_info(cell)))
    base = Path(runs_dir) if runs_dir is not None else (loaded[0].runs_dir if loaded
                                                        else Path("runs"))
    return RunFrame(records=records, missing=missing, experiments=loaded, runs_dir=base)


def _collect_all(runs_dir: Path, say) -> RunFrame:
    if not runs_dir.is_dir():
        raise DataError(runs_dir, "runs folder not found",
                        "pass --runs DIR with the folder that holds the runs (default: runs)")
    records = []
    for results_path in sorted(runs_dir.rglob("results.json")):
        run_dir = results_path.parent
        results = read_json(results_path)
        if results is None or results.get("status") != "completed":
            say(f"skipped unfinished run {run_dir}")
            continue
        records.append(read_run(run_dir))
    return RunFrame(records=records, runs_dir=runs_dir)


def check_provenance(records: Sequence[RunRecord]) -> None:
    """Refuse runs that would silently mix settings or data (see the module docstring)."""
    by_group: dict[tuple, list[RunRecord]] = {}
    for r in records:
        by_group.setdefault(r.group, []).append(r)
    for group, runs in by_group.items():
        first = runs[0]
        for r in runs[1:]:
            if r.config_fingerprint != first.config_fingerprint:
                raise DataError(
                    r.run_dir, f"config fingerprint {r.config_fingerprint} differs from "
                    f"{first.config_fingerprint} of {first.run_dir}, a run of the same cell "
                    f"{'/'.join(group)}: runs with other settings are not mixed",
                    "move one of them out of the runs folder, or report an experiment file "
                    "with --experiment")
            if r.data_fingerprint != first.data_fingerprint:
                raise DataError(
                    r.run_dir, f"data fingerprint {r.data_fingerprint} differs from "
                    f"{first.data_fingerprint} of {first.run_dir} (same cell "
                    f"{'/'.join(group)}): the dataset changed between the runs",
                    "re-run the runs made on the old data, or move them away")
        seeds: dict[int, Path] = {}
        for r in runs:
            if r.seed in seeds:
                raise DataError(r.run_dir, f"seed {r.seed} of cell {'/'.join(group)} also ran "
                                f"in {seeds[r.seed]}; a report uses one run per seed",
                                "move one of the two run directories away")
            seeds[r.seed] = r.run_dir
    by_data: dict[str, RunRecord] = {}
    for r in records:
        other = by_data.setdefault(r.dataset, r)
        if other.data_fingerprint != r.data_fingerprint:
            raise DataError(r.run_dir, f"data fingerprint {r.data_fingerprint} differs from "
                            f"{other.data_fingerprint} of {other.run_dir}, another run on "
                            f"dataset {r.dataset!r}: the data changed between runs",
                            "re-run the runs made on the old data, or move them away")


__all__ = ["RunFrame", "RunRecord", "check_provenance", "collect_runs", "metric_name",
           "read_run"]
