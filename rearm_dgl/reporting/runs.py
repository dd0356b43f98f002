"""Reading run directories into :class:`~rearm_dgl.reporting.frame.RunRecord` objects.

A record is built from a run's ``results.json``, ``config.yaml``, ``env.json``, ``cell.json``
(written by :mod:`rearm_dgl.experiments`) and ``per_user_test.npz``. A run whose files cannot
be read (a truncated ``per_user_test.npz``, a ``results.json`` field of the wrong type) is
skipped with a warning naming it (:class:`UnreadableRun`) and listed in the report's index; a
run that breaks a provenance rule refuses the report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rearm_dgl.errors import ConfigError, DataError
from rearm_dgl.io_utils import read_json
from rearm_dgl.reporting.frame import EFFICIENCY_FIELDS, RunFrame, RunRecord, frame_from_records


class UnreadableRun(DataError):
    """A run directory whose files are damaged or of the wrong shape: skipped with a warning."""


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
        raise UnreadableRun(results_path, "missing or not valid JSON",
                            "finish the run (rearm-dgl experiment run FILE resumes it) or move "
                            "the directory out of the runs folder")
    if results.get("status") != "completed":
        raise DataError(results_path, f"status is {results.get('status')!r}, not 'completed'",
                        "finish the run or move the directory out of the runs folder")
    cell = cell if cell is not None else (read_json(run_dir / "cell.json") or {})
    if not isinstance(cell.get("sweep") or {}, dict):
        raise UnreadableRun(run_dir / "cell.json", f"field 'sweep' is {cell['sweep']!r}, not "
                            f"an object", "restore the file written by rearm-dgl experiment "
                            "run, or re-run the cell")
    for key in ("model", "dataset", "seed", "test", "config_fingerprint", "data_fingerprint"):
        if key not in results:
            raise UnreadableRun(results_path, f"has no {key!r}", "this is not a results.json "
                                "written by rearm-dgl train; re-run it")
    _check_types(results_path, results)
    config = {}
    if (run_dir / "config.yaml").is_file():
        try:
            config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UnreadableRun(run_dir / "config.yaml", f"cannot be read "
                                f"({str(exc).splitlines()[0]})", "re-run the run") from None
        if not isinstance(config, dict):
            raise UnreadableRun(run_dir / "config.yaml", "is not a mapping", "re-run the run")
    efficiency = results.get("efficiency") or {}
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
        efficiency={k: efficiency.get(k) for k in EFFICIENCY_FIELDS},
    )
    if cell and cell.get("model") not in (None, rec.model):
        raise DataError(run_dir / "cell.json", f"names model {cell.get('model')!r} but "
                        f"results.json says {rec.model!r}", "move the directory away and re-run")
    _check_per_user(rec)
    return rec


def _is_number(v: Any, integer: bool = False) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    return float(v).is_integer() if integer else True


def _check_types(path: Path, results: dict[str, Any]) -> None:
    """Refuse fields of the wrong type with a message naming the field (never a traceback)."""
    def bad(key: str, want: str):
        raise UnreadableRun(path, f"field {key!r} is {results[key]!r}, not {want}",
                            "restore the file written by rearm-dgl train, or re-run the run")

    for key in ("model", "dataset", "config_fingerprint", "data_fingerprint"):
        if not isinstance(results[key], str):
            bad(key, "a string")
    if not _is_number(results["seed"], integer=True):
        bad("seed", "an integer")
    for key in ("best_epoch", "epochs_run"):
        if results.get(key) is not None and not _is_number(results[key], integer=True):
            bad(key, "an integer")
    if results.get("wall_seconds") is not None and not _is_number(results["wall_seconds"]):
        bad("wall_seconds", "a number")
    for key in ("test", "valid"):
        values = results.get(key)
        if key == "valid" and values is None:
            continue
        if not isinstance(values, dict) or not all(_is_number(v) for v in values.values()):
            bad(key, "an object of metric name -> number")
    eff = results.get("efficiency")
    if eff is None:
        return
    if not isinstance(eff, dict) or not all(v is None or _is_number(v) for v in eff.values()):
        bad("efficiency", "an object of numbers (or null)")


def load_per_user(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(users, {metric: values})`` of a ``per_user_test.npz``, checked.

    Raises:
        UnreadableRun: the file is missing, damaged or its arrays do not line up.
    """
    fix = "re-run the run, or move its directory out of the runs folder"
    if not path.is_file():
        raise UnreadableRun(path, "missing", fix)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: np.asarray(npz[k]) for k in npz.files}
    except Exception as exc:  # truncated zips raise BadZipFile, EOFError, OSError, ...
        raise UnreadableRun(path, f"cannot be read ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else 'damaged'})",
                            fix) from None
    users = arrays.pop("users", None)
    if users is None or users.ndim != 1:
        raise UnreadableRun(path, "has no 1-d 'users' array", fix)
    wrong = sorted(k for k, v in arrays.items() if v.shape != users.shape
                   or not np.issubdtype(v.dtype, np.number))
    if wrong or not np.issubdtype(users.dtype, np.integer):
        raise UnreadableRun(path, f"arrays {wrong or ['users']} do not line up with 'users'",
                            fix)
    return users, arrays


def _check_per_user(rec: RunRecord) -> None:
    path = rec.run_dir / "per_user_test.npz"
    if not path.is_file():
        return
    users, arrays = load_per_user(path)
    rec.n_test_users = int(len(users))
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
        frame = _collect_experiments(runs_dir, experiments, say)
    else:
        frame = _collect_all(Path(runs_dir if runs_dir is not None else "runs"), say)
    if not frame.records:
        where = ", ".join(str(e) for e in experiments) if experiments else str(frame.runs_dir)
        raise DataError(frame.runs_dir, f"no finished runs found for {where}",
                        "run the experiment first (rearm-dgl experiment run FILE) or point "
                        "--runs at the folder that holds the run directories")
    return frame_from_records(frame.records, missing=frame.missing,
                              experiments=frame.experiments, runs_dir=frame.runs_dir,
                              skipped=frame.skipped)


def _read_or_skip(run_dir: Path, skipped: list[tuple[Path, str]], say,
                  cell: dict[str, Any] | None = None) -> RunRecord | None:
    """The run's record, or None (with a warning naming it) when its files are damaged."""
    try:
        return read_run(run_dir, cell)
    except UnreadableRun as exc:
        reason = f"{exc.path}: {exc.problem}"
        skipped.append((run_dir, reason))
        say(f"warning: skipped run {run_dir}: {reason}")
        return None


def _collect_experiments(runs_dir, files: Sequence[str | Path], say) -> RunFrame:
    from rearm_dgl.experiments import load_experiment
    from rearm_dgl.tracking import config_fingerprint

    records: list[RunRecord] = []
    skipped: list[tuple[Path, str]] = []
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
            rec = _read_or_skip(run_dir, skipped, say, exp.cell_info(cell))
            if rec is not None:
                records.append(rec)
    base = Path(runs_dir) if runs_dir is not None else (loaded[0].runs_dir if loaded
                                                        else Path("runs"))
    return RunFrame(records=records, missing=missing, experiments=loaded, runs_dir=base,
                    skipped=skipped)


def _collect_all(runs_dir: Path, say) -> RunFrame:
    if not runs_dir.is_dir():
        raise DataError(runs_dir, "runs folder not found",
                        "pass --runs DIR with the folder that holds the runs (default: runs)")
    records = []
    skipped: list[tuple[Path, str]] = []
    for results_path in sorted(runs_dir.rglob("results.json")):
        run_dir = results_path.parent
        results = read_json(results_path)
        if results is not None and results.get("status") != "completed":
            say(f"skipped unfinished run {run_dir}")
            continue
        rec = _read_or_skip(run_dir, skipped, say)
        if rec is not None:
            records.append(rec)
    return RunFrame(records=records, runs_dir=runs_dir, skipped=skipped)


__all__ = ["UnreadableRun", "collect_runs", "load_per_user", "read_run"]
