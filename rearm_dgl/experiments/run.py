"""Running an experiment: every cell that is not done, each claimed by exactly one worker.

Workers walk the cells in file order; each cell is claimed through the store
(:mod:`rearm_dgl.experiments.store`) before it runs, and checked again once claimed, so a
cell another worker finished meanwhile is skipped. Any number of ``experiment run``
processes (and, with ``--storage``, machines) may work on one experiment at once. Each cell
prints a tagged line every few epochs, and a closing line with its result, its duration
and an estimate of the time the remaining cells need.
"""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rearm_dgl import workers
from rearm_dgl.errors import ConfigError, DataError, RearmError
from rearm_dgl.experiments.spec import (
    BOOKKEEPING,
    CELL_FILE,
    ERROR_FILE,
    RESULTS_FILE,
    Cell,
    Experiment,
    _load_data,
    check_datasets,
    load_experiment,
)
from rearm_dgl.experiments.status import cell_status, experiment_status, stored_status
from rearm_dgl.experiments.store import open_store
from rearm_dgl.io_utils import atomic_write_json, read_json
from rearm_dgl.tracking import config_fingerprint

#: While a worker only waits for cells that others hold, it says so this often (seconds).
WAIT_REPORT_SECONDS = 600.0


@dataclass
class RunSummary:
    """What :func:`run_experiment` did, cell by cell."""

    ran: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    busy: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def text(self) -> str:
        out = [f"ran {len(self.ran)}, already done {len(self.skipped)}, "
               f"run by other workers {len(self.busy)}, failed {len(self.failed)}"]
        out += [f"  failed: {p}: {msg}  (details in {p / ERROR_FILE})" for p, msg in self.failed]
        return "\n".join(out)


def run_experiment(file: str | Path | Experiment, jobs: int = 1,
                   runs_dir: str | Path | None = None, storage: str | None = None,
                   callbacks: Iterable[Callable] = (),
                   echo: Callable[[str], None] | None = None) -> RunSummary:
    """Run the cells of an experiment that are not done yet.

    Done cells are skipped; an unfinished cell resumes from its checkpoint (or restarts
    cleanly when it has none); a failed cell is retried and, if it fails again, its error is
    written to ``error.json`` (and, with ``storage``, the database) while the other cells
    go on. SIGTERM or Ctrl-C stops the running cells where a rerun resumes them.

    Args:
        file: The experiment file (or a loaded :class:`Experiment`).
        jobs: Worker processes on this machine; 1 runs the cells in this process.
        runs_dir: Overrides the file's ``runs_dir``.
        storage: A database URL shared by workers on many machines; None: this machine.
        callbacks: Passed to ``fit`` (``jobs == 1`` only); e.g. progress hooks.
        echo: Where progress lines go (default: nowhere).

    Raises:
        ConfigError / DataError: for an unknown model, dataset or key, before anything runs;
            for a stale cell (a finished run with other settings in its directory); for a
            database that holds other cells under this name, or a runs folder coordinated
            through another storage.
        StudyError: the database cannot be reached.
        workers.Interrupted: SIGTERM or Ctrl-C.
    """
    exp = file if isinstance(file, Experiment) else load_experiment(file, runs_dir)
    say = echo or (lambda _msg: None)
    store = open_store(exp, storage)
    try:
        if storage:  # an unreachable database fails first, before the data is loaded
            from rearm_dgl.tuning.storage import check_reachable

            check_reachable(store.url)
        data_fps = check_datasets(exp)
        if storage:
            # Registering checks that the database is reachable and holds this grid (or
            # none), before anything is stored; the database then says what is done.
            store.register()
            statuses = stored_status(exp, store)
        else:
            statuses = [cell_status(exp, c, data_fps, store) for c in exp.cells()]
            stale = [s for s in statuses if s.state == "stale"]
            if stale:
                listing = "\n".join(f"  {s.run_dir}: {s.detail}" for s in stale)
                raise ConfigError(
                    f"{exp.source or exp.name}: {len(stale)} cell(s) hold finished runs made "
                    f"with other settings or data:\n{listing}\n  fix: move those run "
                    f"directories away, or give the experiment a new name, then run again")
            store.register()
        summary = RunSummary()
        summary.skipped = [s.run_dir for s in statuses if s.state == "done"]
        todo = [s.cell for s in statuses if s.state != "done"]
        running = sum(s.state == "running" for s in statuses)
        say(f"experiment {exp.name} ({store.where or 'this machine'}): {len(todo)} of "
            f"{len(statuses)} cells to run ({len(summary.skipped)} done, {running} running "
            f"elsewhere), {jobs} worker(s)")
        if not todo:
            return summary
        if jobs <= 1:
            previous = workers.interrupt_on_sigterm()
            try:
                outcomes = run_cells(exp, store, todo, data_fps, say, jobs=1,
                                     callbacks=tuple(callbacks))
            finally:
                workers.restore_sigterm(previous)
        else:
            failures = workers.run_workers(
                _worker_main, [(exp, storage, [c.key for c in todo], data_fps, jobs)] * jobs,
                name="rearm-experiment")
            for line in failures:
                say(f"note: {line}")
            outcomes = _outcomes_after_workers(exp, store, todo, data_fps)
    finally:
        store.close()
    for cell in todo:
        state, msg = outcomes.get(cell, ("elsewhere", ""))
        run_dir = exp.run_dir(cell)
        if state == "done":
            summary.ran.append(run_dir)
        elif state == "failed":
            summary.failed.append((run_dir, msg))
        else:
            summary.busy.append(run_dir)
    return summary


def _outcomes_after_workers(exp: Experiment, store: Any, todo: Sequence[Cell],
                            data_fps: dict[str, str]) -> dict[Cell, tuple[str, str]]:
    """How the cells of ``todo`` stand after this command's workers ended."""
    by_cell = {s.cell: s for s in experiment_status(exp, check_data=False, store=store)}
    out = {}
    for cell in todo:
        if store.is_done(cell, data_fps):
            out[cell] = ("done", "")
        elif by_cell[cell].state == "failed":
            out[cell] = ("failed", by_cell[cell].detail)
    return out


def _worker_main(index: int, exp: Experiment, storage: str | None, keys: list[str],
                 data_fps: dict[str, str], jobs: int) -> None:
    """Entry point of a worker process started by :func:`rearm_dgl.workers.run_workers`."""
    def echo(line: str) -> None:
        print(line, flush=True)

    store = open_store(exp, storage)
    wanted = set(keys)
    try:
        run_cells(exp, store, [c for c in exp.cells() if c.key in wanted], data_fps, echo,
                  jobs=jobs)
    finally:
        store.close()


def run_cells(exp: Experiment, store: Any, cells: Sequence[Cell], data_fps: dict[str, str],
              echo: Callable[[str], None], jobs: int = 1,
              callbacks: Sequence[Callable] = ()) -> dict[Cell, tuple[str, str]]:
    """One worker's pass over ``cells``: claim each free one, run it, record it.

    Args:
        jobs: Workers sharing the cells, for the time-left estimate.

    Cells that other workers hold are tried again every ``store.poll_seconds`` until they
    are done (or this worker took over a dead worker's claim and ran them). While it only
    waits, the worker says which cells and who holds them, at once and then every
    :data:`WAIT_REPORT_SECONDS`: a holder that is alive but stuck is never taken over, so
    the line is how a stuck run shows itself.

    Returns:
        ``{cell: (state, message)}`` for the cells this worker ran.
    """
    outcomes: dict[Cell, tuple[str, str]] = {}
    durations: list[float] = []
    datasets: dict[str, Any] = {}
    pending = list(cells)
    waiting_since = reported = None
    while pending:
        busy = []
        for cell in pending:
            if store.is_done(cell, data_fps):
                continue  # another worker finished it meanwhile
            claim = store.claim(cell)
            if claim is None:
                busy.append(cell)
                continue
            try:
                if store.is_done(cell, data_fps):  # finished between the check and the claim
                    store.release(claim)
                    continue
                if cell.dataset not in datasets:
                    datasets = {cell.dataset: _load_data(exp, cell.dataset)}  # keep one
                run_dir = exp.run_dir(cell)
                echo(f"[{cell.key}] started in {run_dir}")
                t0 = time.monotonic()
                with workers.quiet_fit_warnings():
                    state, msg = run_cell(exp.config(cell), run_dir, exp.cell_info(cell),
                                          data=datasets[cell.dataset], callbacks=callbacks,
                                          progress=workers.Progress(f"[{cell.key}]", echo))
                took = time.monotonic() - t0
                if state == "done":
                    if not store.record(claim, cell, run_dir):
                        state, msg = "failed", ("its claim expired while it ran and another "
                                                "worker took the cell over; this result is not "
                                                "recorded")
                else:
                    store.fail(claim, msg)
            except BaseException:  # Ctrl-C, SIGTERM or a bug: the cell stays resumable
                store.release(claim)
                raise
            outcomes[cell] = (state, msg)
            durations.append(took)
            left = sum(1 for c in cells if c not in outcomes)
            echo(_end_line(exp, cell, state, msg, took, durations, left, jobs))
        # Cells other workers hold: wait for them to finish, or for a dead worker's claim to
        # expire and take the cell over.
        pending = busy
        if not pending:
            break
        now = time.monotonic()
        if waiting_since is None:
            waiting_since = now
        if reported is None or now - reported >= WAIT_REPORT_SECONDS:
            echo(_waiting_line(store, pending, now - waiting_since))
            reported = now
        time.sleep(store.poll_seconds)
    return outcomes


def _waiting_line(store: Any, cells: Sequence[Cell], waited: float, shown: int = 5) -> str:
    """``waiting 12 min for 2 cells that other workers hold: key (holder), ...``."""
    held = ", ".join(f"{c.key} ({store.running(c) or 'holder not found yet'})"
                     for c in cells[:shown])
    more = f" and {len(cells) - shown} more" if len(cells) > shown else ""
    noun = "cell" if len(cells) == 1 else "cells"
    return (f"waiting {waited / 60:.0f} min for {len(cells)} {noun} that other workers "
            f"hold: {held}{more}")


def _end_line(exp: Experiment, cell: Cell, state: str, msg: str, took: float,
              durations: Sequence[float], left: int, jobs: int) -> str:
    """``[key] done: valid Recall@20 0.0812, test Recall@20 0.0790 in 3m10s; ...``."""
    if state == "done":
        results = read_json(exp.run_dir(cell) / RESULTS_FILE) or {}
        metric = exp.config(cell).eval.metric
        valid = (results.get("valid") or {}).get(metric)
        test = (results.get("test") or {}).get(metric)
        what = "done" + (f": valid {metric} {valid:.4f}, test {metric} {test:.4f}"
                         if isinstance(valid, float) and isinstance(test, float) else "")
    else:
        what = f"failed: {msg}"
    line = f"[{cell.key}] {what} in {workers.duration(took)}"
    if left:
        mean = sum(durations) / len(durations)
        line += (f"; about {workers.duration(mean * left / max(jobs, 1))} left for at most "
                 f"{left} more cell(s)")
    return line


def run_cell(cfg, run_dir: str | Path, info: dict[str, Any], data=None,
             callbacks: Sequence[Callable] = (),
             progress: Callable[[str], None] | None = None) -> tuple[str, str]:
    """Run (or resume) one cell in ``run_dir``; the caller holds the cell's claim.

    Returns:
        ``(state, message)``: ``done`` or ``failed`` (the exception's message;
        ``error.json`` has the traceback).
    """
    from rearm_dgl.train import fit

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        (run_dir / ERROR_FILE).unlink(missing_ok=True)
        resume = _resume_point(run_dir)
        if resume is None:
            _clean(run_dir)
        atomic_write_json(run_dir / CELL_FILE, info)
        try:
            fit(cfg, run_dir=None if resume else run_dir, data=data, callbacks=callbacks,
                resume=resume, quiet=True, progress=progress)
        except (ConfigError, DataError) as exc:
            if resume is None:
                raise
            # A checkpoint that cannot be resumed (its config or data changed): start over.
            _clean(run_dir)
            atomic_write_json(run_dir / CELL_FILE, {**info, "restarted": f"resume failed: {exc}"})
            fit(cfg, run_dir=run_dir, data=data, callbacks=callbacks, resume=None, quiet=True,
                progress=progress)
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


__all__ = ["RunSummary", "run_cell", "run_cells", "run_experiment"]
