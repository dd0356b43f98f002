"""Reports from a database: the runs an experiment recorded with ``--storage``.

``rearm-dgl experiment run FILE --storage URL`` records each finished cell's run files
(``results.json``, ``config.yaml``, ``env.json``, ``cell.json``, ``metrics.jsonl``,
``per_user_test.npz``) in the database. :func:`build_stored_report` writes them into a
temporary runs folder laid out as the experiment's own, and builds the report from it
exactly as from local run folders; so any machine that reaches the database writes the
same tables, without the workers' run folders.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from rearm_dgl.errors import ConfigError


def fetch_runs(storage: str, experiments: Sequence[str | Path], folder: Path) -> int:
    """Write the recorded runs of ``experiments`` under ``folder``; returns how many.

    Raises:
        StudyError: the database cannot be reached.
        ConfigError: it holds no such experiment, or one with other cells.
    """
    from rearm_dgl.experiments import DatabaseStore, load_experiment
    from rearm_dgl.experiments.store import unpack_files
    from rearm_dgl.tuning.storage import check_reachable, parse_database_url

    check_reachable(parse_database_url(storage))
    n = 0
    for f in experiments:
        exp = load_experiment(f, runs_dir=folder)
        store = DatabaseStore(exp, storage)
        try:
            store.check_same_cells(create=False)
            cells = {c.key: c for c in exp.cells()}
            for key, blob in store.files().items():
                if key in cells and blob:
                    unpack_files(blob, exp.run_dir(cells[key]))
                    n += 1
        finally:
            store.close()
    return n


def build_stored_report(out: str | Path, storage: str, experiments: Sequence[str | Path],
                        command: str | None = None,
                        echo: Callable[[str], None] | None = None, std: str = "small"):
    """:func:`~rearm_dgl.reporting.report.build_report` over the runs recorded in ``storage``.

    Raises:
        ConfigError: no experiment file given.
    """
    from rearm_dgl.reporting.report import build_report

    if not experiments:
        raise ConfigError("report --storage needs --experiment FILE: the database holds runs "
                          "by experiment")
    with tempfile.TemporaryDirectory(prefix="rearm-stored-runs-") as tmp:
        fetch_runs(storage, experiments, Path(tmp))
        return build_report(out, runs_dir=tmp, experiments=experiments, command=command,
                            echo=echo, std=std)


__all__ = ["build_stored_report", "fetch_runs"]
