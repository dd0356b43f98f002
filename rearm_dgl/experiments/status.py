"""Where each cell of an experiment stands: done, running, failed, missing or stale."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rearm_dgl.experiments.spec import (
    ERROR_FILE,
    RESULTS_FILE,
    Cell,
    Experiment,
    check_datasets,
)
from rearm_dgl.io_utils import read_json
from rearm_dgl.tracking import config_fingerprint

STATES = ("done", "running", "failed", "missing", "stale")


@dataclass
class CellStatus:
    """Where one cell stands: ``state`` is one of :data:`STATES`."""

    cell: Cell
    run_dir: Path
    state: str
    detail: str = ""


def cell_status(exp: Experiment, cell: Cell, data_fingerprints: Mapping[str, str] | None = None,
                store: Any = None) -> CellStatus:
    """The state of one cell from its run directory (and, for ``running``, the store).

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
    if store is not None:
        holder = store.running(cell)
        if holder:
            return CellStatus(cell, run_dir, "running", holder)
    error = read_json(run_dir / ERROR_FILE)
    if error is not None:
        return CellStatus(cell, run_dir, "failed", str(error.get("message", "")).splitlines()[0]
                          if error.get("message") else "")
    if (run_dir / "checkpoint_last.pt").exists():
        return CellStatus(cell, run_dir, "missing", "unfinished: resumes from its checkpoint")
    return CellStatus(cell, run_dir, "missing")


def stored_status(exp: Experiment, store: Any) -> list[CellStatus]:
    """Every cell's state as a database store records it."""
    rows = store.rows()
    out = []
    for cell in exp.cells():
        row = rows.get(cell.key)
        state = {"done": "done", "failed": "failed", "running": "running"}.get(
            getattr(row, "state", ""), "missing")
        detail = ""
        if state == "running":
            holder = store.running(cell)
            state, detail = ("running", holder) if holder else ("missing", "claim expired")
        elif state == "failed":
            detail = str(row.error or "").splitlines()[0] if row.error else ""
        out.append(CellStatus(cell, exp.run_dir(cell), state, detail))
    return out


def experiment_status(exp: Experiment, check_data: bool = True, store: Any = None
                      ) -> list[CellStatus]:
    """The state of every cell (loads each dataset once when ``check_data``)."""
    from rearm_dgl.experiments.store import DatabaseStore, LocalStore

    if isinstance(store, DatabaseStore):
        return stored_status(exp, store)
    store = store or LocalStore(exp)
    fps = check_datasets(exp) if check_data else None
    return [cell_status(exp, c, fps, store) for c in exp.cells()]


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



__all__ = ["CellStatus", "STATES", "cell_status", "experiment_status", "format_status",
           "stored_status"]
