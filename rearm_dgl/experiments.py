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
holding the normal run artifacts plus the bookkeeping files ``cell.json`` (which cell it is),
``.lock`` (pid of the process running it) and ``error.json`` (the last failure). A cell is
*done* when its ``results.json`` says ``completed`` and its config and data fingerprints are
the cell's; a done cell is never run again.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import socket
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rearm_dgl.config import read_yaml
from rearm_dgl.errors import ConfigError, DataError, RearmError
from rearm_dgl.io_utils import atomic_write_json, read_json
from rearm_dgl.models.registry import canonical as canonical_model
from rearm_dgl.tracking import config_fingerprint

CELL_FILE = "cell.json"
LOCK_FILE = ".lock"
ERROR_FILE = "error.json"
RESULTS_FILE = "results.json"
BOOKKEEPING = (CELL_FILE, LOCK_FILE, ERROR_FILE)
DEFAULT_VARIANT = "default"

STATES = ("done", "running", "failed", "missing", "stale")

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
                "experiment_file": str(self.source) if self.source else ""}


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
        path: The YAML file.
        runs_dir: Overrides the file's ``runs_dir``.

    Raises:
        ConfigError: naming the file and the field for any problem.
    """
    path = Path(path)
    raw = read_yaml(path, "experiment file not found; check the path (the shipped ones are "
                          "in studies/)") or {}
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


# ---------------------------------------------------------------------------------------
# Status


@dataclass
class CellStatus:
    """Where one cell stands: ``state`` is one of :data:`STATES`."""

    cell: Cell
    run_dir: Path
    state: str
    detail: str = ""


def cell_status(exp: Experiment, cell: Cell, data_fingerprints: dict[str, str] | None = None
                ) -> CellStatus:
    """The state of one cell, from its run directory only.

    ``stale`` means the directory holds a completed run whose fingerprints are not the cell's
    (the experiment file or the data changed since): it is never overwritten silently.
    """
    run_dir = exp.run_dir(cell)
    results = read_json(run_dir / RESULTS_FILE)
    if results is not None and results.get("status") == "completed":
        want = config_fingerprint(exp.config(cell))
        got = results.get("config_fingerprint")
        if got != want:
            return CellStatus(cell, run_dir, "stale",
                              f"config fingerprint {got} is not the cell's {want}")
        if data_fingerprints and cell.dataset in data_fingerprints:
            want_d, got_d = data_fingerprints[cell.dataset], results.get("data_fingerprint")
            if got_d != want_d:
                return CellStatus(cell, run_dir, "stale",
                                  f"data fingerprint {got_d} is not the dataset's {want_d}")
        return CellStatus(cell, run_dir, "done")
    lock = read_json(run_dir / LOCK_FILE)
    if lock is not None and _lock_alive(lock):
        return CellStatus(cell, run_dir, "running", f"pid {lock.get('pid')}")
    error = read_json(run_dir / ERROR_FILE)
    if error is not None:
        return CellStatus(cell, run_dir, "failed", str(error.get("message", "")).splitlines()[0]
                          if error.get("message") else "")
    if (run_dir / "checkpoint_last.pt").exists():
        return CellStatus(cell, run_dir, "missing", "unfinished: resumes from its checkpoint")
    return CellStatus(cell, run_dir, "missing")


def experiment_status(exp: Experiment, check_data: bool = True) -> list[CellStatus]:
    """:func:`cell_status` of every cell (loads each dataset once when ``check_data``)."""
    fps = check_datasets(exp) if check_data else None
    return [cell_status(exp, c, fps) for c in exp.cells()]


def format_status(exp: Experiment, statuses: Sequence[CellStatus]) -> str:
    """A text grid: one row per (dataset, model, variant), one column per seed."""
    marks = {"done": "done", "running": "RUN", "failed": "FAIL", "missing": "-",
             "stale": "STALE"}
    by_key = {(s.cell.group, s.cell.seed): s for s in statuses}
    groups = list(dict.fromkeys(s.cell.group for s in statuses))
    head = ["dataset", "model", "variant"] + [f"s{seed}" for seed in exp.seeds]
    rows = [[g[0], g[1], g[2]] + [marks[by_key[(g, seed)].state] for seed in exp.seeds]
            for g in groups]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    counts = {state: sum(s.state == state for s in statuses) for state in STATES}
    lines.append("")
    lines.append(f"experiment {exp.name}: " + ", ".join(f"{n} {st}" for st, n in counts.items()
                                                        if n or st in STATES[:4])
                 + f" of {len(statuses)} cells")
    for s in statuses:
        if s.state in ("failed", "stale") or (s.state == "running"):
            lines.append(f"  {s.state}: {s.run_dir}  {s.detail}")
    if counts["stale"]:
        lines.append("  stale cells hold runs made with other settings or data; move those "
                     "run directories away (or rename the experiment) to run them again")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Running


@dataclass
class RunSummary:
    """What :func:`run_experiment` did, cell by cell."""

    ran: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    busy: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def text(self) -> str:
        out = [f"ran {len(self.ran)}, already done {len(self.skipped)}, "
               f"running elsewhere {len(self.busy)}, failed {len(self.failed)}"]
        out += [f"  failed: {p}: {msg}  (details in {p / ERROR_FILE})" for p, msg in self.failed]
        return "\n".join(out)


def run_experiment(file: str | Path | Experiment, jobs: int = 1,
                   runs_dir: str | Path | None = None, callbacks: Iterable[Callable] = (),
                   echo: Callable[[str], None] | None = None) -> RunSummary:
    """Run the cells of an experiment that are not done yet.

    Done cells are skipped; an unfinished cell resumes from its checkpoint (or restarts
    cleanly when it has none); a failed cell is retried and, if it fails again, its error is
    written to ``error.json`` while the other cells go on.

    Args:
        file: The experiment file (or a loaded :class:`Experiment`).
        jobs: Worker processes; 1 runs the cells in this process.
        runs_dir: Overrides the file's ``runs_dir``.
        callbacks: Passed to ``fit`` (``jobs == 1`` only); e.g. progress hooks.
        echo: Where progress lines go (default: nowhere).

    Raises:
        ConfigError / DataError: for an unknown model, dataset or key, before anything runs.
        ConfigError: for a stale cell (a finished run with other settings in its directory).
    """
    exp = file if isinstance(file, Experiment) else load_experiment(file, runs_dir)
    say = echo or (lambda _msg: None)
    data_fps = check_datasets(exp)
    statuses = [cell_status(exp, c, data_fps) for c in exp.cells()]
    stale = [s for s in statuses if s.state == "stale"]
    if stale:
        listing = "\n".join(f"  {s.run_dir}: {s.detail}" for s in stale)
        raise ConfigError(
            f"{exp.source or exp.name}: {len(stale)} cell(s) hold finished runs made with other "
            f"settings or data:\n{listing}\n  fix: move those run directories away, or give "
            f"the experiment a new name, then run again")
    summary = RunSummary()
    todo = []
    for s in statuses:
        if s.state == "done":
            summary.skipped.append(s.run_dir)
        elif s.state == "running":
            summary.busy.append(s.run_dir)
        else:
            todo.append(s)
    say(f"experiment {exp.name}: {len(todo)} of {len(statuses)} cells to run "
        f"({len(summary.skipped)} done, {len(summary.busy)} running elsewhere)")
    if not todo:
        return summary
    if jobs <= 1:
        datasets: dict[str, Any] = {}
        for i, s in enumerate(todo, 1):
            cell = s.cell
            if cell.dataset not in datasets:
                datasets = {cell.dataset: _load_data(exp, cell.dataset)}  # keep one in memory
            say(f"[{i}/{len(todo)}] {s.run_dir}")
            state, msg = run_cell(exp.config(cell), s.run_dir, exp.cell_info(cell),
                                  data=datasets[cell.dataset], callbacks=tuple(callbacks))
            _record(summary, s.run_dir, state, msg, say)
        return summary
    _run_pool(exp, todo, jobs, summary, say)
    return summary


def _record(summary: RunSummary, run_dir: Path, state: str, msg: str, say) -> None:
    if state == "done":
        summary.ran.append(run_dir)
    elif state == "running":
        summary.busy.append(run_dir)
    else:
        summary.failed.append((run_dir, msg))
        say(f"  failed: {msg}")


def _run_pool(exp: Experiment, todo: list[CellStatus], jobs: int, summary: RunSummary,
              say) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // jobs)
    # spawn: a forked child would inherit torch's thread pools and locks of the parent.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_worker, exp.config(s.cell).to_dict(), str(s.run_dir),
                               exp.cell_info(s.cell), threads): s for s in todo}
        try:
            for i, fut in enumerate(as_completed(futures), 1):
                s = futures[fut]
                try:
                    state, msg = fut.result()
                except Exception as exc:  # the worker process itself died
                    state, msg = "failed", f"worker process failed: {exc}"
                    _write_error(s.run_dir, msg, "")
                say(f"[{i}/{len(todo)}] {state}: {s.run_dir}")
                _record(summary, s.run_dir, state, msg, say)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def _worker(cfg_dict: dict, run_dir: str, info: dict, threads: int) -> tuple[str, str]:
    import torch

    from rearm_dgl.config import config_from_dict

    torch.set_num_threads(threads)
    return run_cell(config_from_dict(cfg_dict), Path(run_dir), info)


def run_cell(cfg, run_dir: str | Path, info: dict[str, Any], data=None,
             callbacks: Sequence[Callable] = ()) -> tuple[str, str]:
    """Run (or resume) one cell in ``run_dir`` under its lock.

    Returns:
        ``(state, message)``: ``done``, ``running`` (another live process holds the lock) or
        ``failed`` (the exception's message; ``error.json`` has the traceback).
    """
    from rearm_dgl.train import fit

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not _acquire_lock(run_dir):
        return "running", "another process holds the lock"
    try:
        (run_dir / ERROR_FILE).unlink(missing_ok=True)
        resume = _resume_point(run_dir)
        if resume is None:
            _clean(run_dir)
        atomic_write_json(run_dir / CELL_FILE, info)
        try:
            fit(cfg, run_dir=None if resume else run_dir, data=data, callbacks=callbacks,
                resume=resume, quiet=True)
        except (ConfigError, DataError) as exc:
            if resume is None:
                raise
            # A checkpoint that cannot be resumed (its config or data changed): start over.
            _clean(run_dir)
            atomic_write_json(run_dir / CELL_FILE, {**info, "restarted": f"resume failed: {exc}"})
            fit(cfg, run_dir=run_dir, data=data, callbacks=callbacks, resume=None, quiet=True)
        results = read_json(run_dir / RESULTS_FILE) or {}
        if results.get("status") != "completed":
            raise RearmError(f"{run_dir}: fit returned but results.json does not say completed "
                             f"(status {results.get('status')!r})")
        want = config_fingerprint(cfg)
        if results.get("config_fingerprint") != want:
            raise RearmError(f"{run_dir}: results.json config fingerprint "
                             f"{results.get('config_fingerprint')} is not the cell's {want}")
        return "done", ""
    except Exception as exc:
        msg = f"{type(exc).__name__}: {exc}"
        _write_error(run_dir, msg, traceback.format_exc())
        return "failed", msg
    finally:
        _release_lock(run_dir)


def _resume_point(run_dir: Path) -> Path | None:
    """The run folder, when it holds a checkpoint that ``fit(resume=...)`` can continue."""
    return run_dir if (run_dir / "checkpoint_last.pt").is_file() else None


def _clean(run_dir: Path) -> None:
    """Remove everything of an unfinished run except the bookkeeping files."""
    for p in run_dir.iterdir():
        if p.name in BOOKKEEPING:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _write_error(run_dir: Path, message: str, trace: str) -> None:
    try:
        atomic_write_json(Path(run_dir) / ERROR_FILE, {"message": message, "traceback": trace})
    except OSError:
        pass


def _acquire_lock(run_dir: Path) -> bool:
    lock = run_dir / LOCK_FILE
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = read_json(lock)
            if held is not None and _lock_alive(held):
                return False
            lock.unlink(missing_ok=True)  # left by a dead process
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": os.getpid(), "host": socket.gethostname()}, fh)
        return True
    return False


def _release_lock(run_dir: Path) -> None:
    lock = run_dir / LOCK_FILE
    held = read_json(lock)
    if held is not None and held.get("pid") == os.getpid():
        lock.unlink(missing_ok=True)


def _lock_alive(lock: dict) -> bool:
    if lock.get("host") != socket.gethostname():
        return True  # another machine's process: assume it is alive
    try:
        pid = int(lock.get("pid", -1))
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["Cell", "CellStatus", "Experiment", "RunSummary", "cell_status", "check_datasets",
           "experiment_status", "format_status", "load_experiment", "run_cell",
           "run_experiment", "STATES"]
