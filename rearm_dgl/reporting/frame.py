"""One table of finished runs: the records, their pandas frame and the provenance rules.

Every row is a :class:`RunRecord` (read from a run directory by
:mod:`rearm_dgl.reporting.runs`). The records become one pandas frame (:func:`runs_dataframe`,
one row per run); the tables, ``runs.csv`` and ``results.csv`` are computed from that frame
alone, so a report never trains and every number traces back to the runs it lists. Another
source of runs (a database, say) only has to produce :class:`RunRecord` objects and pass them
to :func:`frame_from_records`.

Provenance rules (a violation raises :class:`~rearm_dgl.errors.DataError` naming the run):

- with an experiment file, a run's config fingerprint must be the one its cell resolves to;
- runs of one group (experiment, dataset, model, variant) share one config fingerprint and
  one data fingerprint, and no seed occurs twice;
- all runs on one dataset share one data fingerprint;
- the per-user test arrays average to the ``results.json`` test metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rearm_dgl.errors import DataError

METRIC_ALIASES = {"R": "Recall", "N": "NDCG", "P": "Precision", "MAP": "MAP"}

#: Fields of the ``"efficiency"`` object that the training loop writes into results.json.
EFFICIENCY_FIELDS = ("epoch_seconds", "eval_seconds", "peak_rss_bytes", "peak_gpu_bytes",
                     "n_parameters")


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
        efficiency: results.json's ``"efficiency"`` object (empty for older runs): median
            seconds per epoch and per evaluation, peak RSS and GPU bytes, parameter count.
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
    efficiency: dict[str, float | int | None] = field(default_factory=dict)

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

    def per_user(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(users, {metric: per-user test values})`` from ``per_user_test.npz``.

        Raises:
            UnreadableRun: the file is missing or damaged.
        """
        from rearm_dgl.reporting.runs import load_per_user

        return load_per_user(self.run_dir / "per_user_test.npz")


@dataclass
class RunFrame:
    """The records of a report, their pandas frame, and what was expected but not found.

    Attributes:
        records: The finished runs.
        missing: Cells of the experiment files without a finished run.
        experiments: The loaded experiment objects.
        runs_dir: The runs folder.
        skipped: ``(run directory, reason)`` of runs left out because their files are damaged.
    """

    records: list[RunRecord]
    missing: list[Path] = field(default_factory=list)
    experiments: list[Any] = field(default_factory=list)  # loaded Experiment objects
    runs_dir: Path = Path("runs")
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    _df: Any = field(default=None, repr=False)

    @property
    def df(self):
        """The one pandas frame of the report: one row per run (see :func:`runs_dataframe`)."""
        if self._df is None:
            self._df = runs_dataframe(self.records)
        return self._df

    def values(self, metric: str, **equal: Any) -> dict[int, float]:
        """seed -> test ``metric`` of the runs whose columns equal ``equal``, from :attr:`df`."""
        df = self.df
        mask = np.ones(len(df), dtype=bool)
        for k, v in equal.items():
            mask &= (df[k] == v).to_numpy()
        sub = df[mask]
        col = f"test_{metric}"
        if sub.empty:
            return {}
        if col not in df.columns or sub[col].isna().any():
            bad = sub["run_dir"].iloc[0] if col not in df.columns else \
                sub.loc[sub[col].isna(), "run_dir"].iloc[0]
            have = sorted(c[5:] for c in df.columns if c.startswith("test_"))
            raise DataError(Path(bad) / "results.json", f"no test metric {metric!r}",
                            f"report metrics that the runs computed ({have}); check eval.topk")
        return {int(s): float(v) for s, v in zip(sub["seed"], sub[col])}

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


def frame_from_records(records: Sequence[RunRecord], **extra: Any) -> RunFrame:
    """The report's frame from records of any source, after the provenance checks.

    Args:
        records: Finished runs (from run folders, or another storage).
        **extra: ``missing``, ``experiments``, ``runs_dir``, ``skipped`` of :class:`RunFrame`.

    Raises:
        DataError: a run breaks a provenance rule (see the module docstring).
    """
    check_provenance(records)
    return RunFrame(records=list(records), **extra)


#: Identity columns of :func:`runs_dataframe`, in order.
ID_COLUMNS = ("experiment", "kind", "dataset", "model", "variant", "label", "seed")


def runs_dataframe(records: Sequence[RunRecord]):
    """One row per run: the cell, every test and valid metric, epochs, time, memory, size.

    Columns: :data:`ID_COLUMNS`, ``sweep.<key>`` per swept field, ``test_<metric>`` and
    ``valid_<metric>``, ``best_epoch``, ``epochs_run``, ``stop_reason``, ``wall_seconds``,
    the :data:`EFFICIENCY_FIELDS` (empty for runs without the efficiency record),
    ``n_test_users``, ``config_fingerprint``, ``data_fingerprint`` and ``run_dir``.
    """
    import pandas as pd

    rows = []
    for r in records:
        row: dict[str, Any] = {c: getattr(r, c) for c in ID_COLUMNS}
        row.update({f"sweep.{k}": v for k, v in r.sweep.items()})
        row.update({f"test_{k}": v for k, v in r.test.items()})
        row.update({f"valid_{k}": v for k, v in r.valid.items()})
        row.update(best_epoch=r.best_epoch, epochs_run=r.epochs_run, stop_reason=r.stop_reason,
                   wall_seconds=r.wall_seconds)
        row.update({k: r.efficiency.get(k) for k in EFFICIENCY_FIELDS})
        row.update(n_test_users=r.n_test_users, config_fingerprint=r.config_fingerprint,
                   data_fingerprint=r.data_fingerprint, run_dir=str(r.run_dir))
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=list(ID_COLUMNS))
    ints = ["seed", "best_epoch", "epochs_run", "peak_rss_bytes", "peak_gpu_bytes",
            "n_parameters", "n_test_users"]
    for col in ints:  # nullable integers: an absent value stays empty, not 0 or a float
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    metric_cols = sorted(c for c in df.columns if c.startswith(("test_", "valid_")))
    sweep_cols = sorted(c for c in df.columns if c.startswith("sweep."))
    rest = [c for c in df.columns if c not in (*ID_COLUMNS, *metric_cols, *sweep_cols)]
    return df[[*ID_COLUMNS, *sweep_cols, *metric_cols, *rest]]


def results_dataframe(runs):
    """The aggregated table: one row per cell (runs that differ only by seed).

    Args:
        runs: The frame of :func:`runs_dataframe`.

    Returns:
        The identity columns without ``seed``, then ``n_seeds`` and ``seeds``, then
        ``<metric>_mean`` and ``<metric>_std`` (sample std, ddof=1; 0 for one seed) per
        test and valid metric, the mean ``epochs_run``, ``best_epoch`` and ``wall_seconds``,
        and the medians of the efficiency fields.
    """
    import pandas as pd

    keys = [c for c in ID_COLUMNS if c != "seed"]
    sweep_cols = [c for c in runs.columns if c.startswith("sweep.")]
    metric_cols = [c for c in runs.columns if c.startswith(("test_", "valid_"))]
    out = []
    for key, sub in runs.groupby(keys, sort=False, dropna=False):
        row: dict[str, Any] = dict(zip(keys, key))
        row.update({c: sub[c].iloc[0] for c in sweep_cols})
        row["n_seeds"] = len(sub)
        row["seeds"] = " ".join(str(s) for s in sorted(sub["seed"]))
        for c in metric_cols:
            vals = sub[c].astype(float)
            row[f"{c}_mean"] = vals.mean()
            row[f"{c}_std"] = vals.std(ddof=1) if len(vals) > 1 else 0.0
        for c in ("epochs_run", "best_epoch", "wall_seconds"):
            row[f"{c}_mean"] = pd.to_numeric(sub[c], errors="coerce").mean()
        for c in EFFICIENCY_FIELDS:
            row[f"{c}_median"] = pd.to_numeric(sub[c], errors="coerce").median()
        out.append(row)
    return pd.DataFrame(out)


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


__all__ = ["EFFICIENCY_FIELDS", "ID_COLUMNS", "RunFrame", "RunRecord", "check_provenance",
           "frame_from_records", "metric_name", "results_dataframe", "runs_dataframe"]
