"""Where an experiment's cells are claimed and their results kept: a folder or a database.

- :class:`LocalStore` (no ``--storage``): one machine, no server. A cell is claimed with an
  OS file lock (:class:`rearm_dgl.workers.FileClaims`, in ``<runs_dir>/<name>/.claims/``),
  which the kernel drops when its process dies; results are the run folders.
- :class:`DatabaseStore` (``--storage URL``, any SQLAlchemy database every machine
  reaches): one row per cell. A claim is one atomic ``UPDATE`` that only a free cell
  (pending, failed, or running with a heartbeat older than :data:`GRACE_PERIOD`) matches, so
  no two workers ever hold a cell; the holder's :class:`~rearm_dgl.workers.Heartbeat`
  renews it, and a dead worker's claim expires. A finished cell's ``results.json``, the
  per-user test arrays and the other small run files are stored in its row, recorded
  only while the claim is still the worker's own, so each cell has exactly one result.
  ``rearm-dgl report --storage URL`` builds reports from these rows alone.

Both write ``<runs_dir>/<name>/experiment.json`` naming the storage, so a worker started
with ``--storage`` and one without on the same runs folder is refused before anything runs.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rearm_dgl import workers
from rearm_dgl.errors import ConfigError
from rearm_dgl.experiments.spec import RESULTS_FILE, Cell, Experiment
from rearm_dgl.io_utils import atomic_write_json, hash_parts, read_json
from rearm_dgl.tracking import config_fingerprint

MARKER_FILE = "experiment.json"
CLAIMS_DIR = ".claims"
#: Run files a database store keeps for each finished cell (what reports read).
STORED_FILES = ("results.json", "config.yaml", "env.json", "cell.json", "metrics.jsonl",
                "per_user_test.npz")
#: A database claim is renewed this often (seconds) ...
HEARTBEAT_INTERVAL = float(os.environ.get("REARM_DGL_HEARTBEAT_SECONDS", 20))
#: ... and expires when it was not renewed for this long (both may be set in the
#: environment, e.g. a longer grace period for a network with long stalls).
GRACE_PERIOD = float(os.environ.get("REARM_DGL_CLAIM_GRACE_SECONDS", 90))


def cells_fingerprint(exp: Experiment) -> str:
    """One hash of every cell and its config: two runs share it only for the same grid."""
    return hash_parts(sorted((c.key, config_fingerprint(exp.config(c))) for c in exp.cells()))


def check_marker(exp: Experiment, where: str | None, write: bool = True) -> None:
    """Refuse a runs folder that another kind of storage coordinates; else record ours.

    Raises:
        ConfigError: naming the runs folder, the storage it uses and the fix.
    """
    folder = exp.runs_dir / exp.name
    marker = read_json(folder / MARKER_FILE)
    if marker is not None and marker.get("storage") != where:
        had = marker.get("storage")
        said = f"--storage {where}" if where else "no --storage"
        fix = (f"start every worker of it with --storage {had}" if had
               else "start every worker of it without --storage")
        raise ConfigError(f"{folder}: experiment {exp.name} in this runs folder is "
                          f"coordinated {'through ' + had if had else 'on this machine'}, but "
                          f"this worker was given {said}; {fix} (or use another --runs-dir)")
    if marker is None and write:
        atomic_write_json(folder / MARKER_FILE, {"experiment": exp.name, "storage": where})


class LocalStore:
    """Claims by file lock, results in run folders (see the module docstring)."""

    where: str | None = None
    #: Seconds between tries of cells that other processes hold.
    poll_seconds = 2.0

    def __init__(self, exp: Experiment):
        self.exp = exp
        self.claims = workers.FileClaims(exp.runs_dir / exp.name / CLAIMS_DIR)

    def register(self) -> None:
        check_marker(self.exp, None)

    def is_done(self, cell: Cell, data_fingerprints: Mapping[str, str] | None = None) -> bool:
        from rearm_dgl.experiments.status import cell_status

        return cell_status(self.exp, cell, data_fingerprints).state == "done"

    def running(self, cell: Cell) -> str | None:
        """A description of the live holder of ``cell``, or None."""
        return "held by a live process" if self.claims.held(_file_key(cell)) else None

    def claim(self, cell: Cell) -> Any:
        return self.claims.claim(_file_key(cell))

    def record(self, claim: Any, cell: Cell, run_dir: Path) -> bool:
        claim.release()  # the run folder is the record
        return True

    def fail(self, claim: Any, message: str) -> None:
        claim.release()  # error.json in the run folder says what failed

    def release(self, claim: Any) -> None:
        claim.release()

    def close(self) -> None:
        pass


def _file_key(cell: Cell) -> str:
    return cell.key.replace("/", "__")


class _DbClaim:
    def __init__(self, key: str, token: str, beat: workers.Heartbeat):
        self.key, self.token, self.heartbeat = key, token, beat


class DatabaseStore:
    """Claims, heartbeats and results in database tables (see the module docstring)."""

    def __init__(self, exp: Experiment, url: str):
        import sqlalchemy as sa

        from rearm_dgl.tuning.storage import describe_url, engine_kwargs, parse_database_url

        self.exp = exp
        self.poll_seconds = min(5.0, HEARTBEAT_INTERVAL)
        self.url = parse_database_url(url)
        self.where = describe_url(self.url)
        self.sa = sa
        meta = sa.MetaData()
        self.experiments = sa.Table(
            "rearm_experiments", meta,
            sa.Column("name", sa.String(200), primary_key=True),
            sa.Column("cells_fingerprint", sa.String(64), nullable=False),
            sa.Column("cells", sa.Text, nullable=False),
            sa.Column("created", sa.Float, nullable=False))
        self.cells = sa.Table(
            "rearm_cells", meta,
            sa.Column("experiment", sa.String(200), primary_key=True),
            sa.Column("key", sa.String(500), primary_key=True),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("token", sa.String(64)),
            sa.Column("worker", sa.Text),
            sa.Column("heartbeat", sa.Float),
            sa.Column("attempts", sa.Integer, nullable=False, default=0),
            sa.Column("results", sa.Text),
            sa.Column("files", sa.LargeBinary),
            sa.Column("error", sa.Text),
            sa.Column("finished", sa.Float))
        self.meta = meta
        self.engine = sa.create_engine(self.url, **engine_kwargs(self.url))

    # -- setting up ---------------------------------------------------------------------

    def register(self) -> None:
        """Create the tables and this experiment's rows, or check that they are its own.

        Raises:
            StudyError: the database cannot be reached.
            ConfigError: the database holds another grid under this experiment's name, or
                the runs folder is coordinated without this storage; nothing is changed.
        """
        from rearm_dgl.tuning.storage import check_reachable

        check_reachable(self.url)
        check_marker(self.exp, self.where, write=False)
        self.check_same_cells(create=True)
        check_marker(self.exp, self.where)

    def check_same_cells(self, create: bool) -> None:
        sa = self.sa
        fp = cells_fingerprint(self.exp)
        keys = [c.key for c in self.exp.cells()]
        with self.engine.begin() as conn:
            if create:
                self.meta.create_all(conn, checkfirst=True)
            row = conn.execute(sa.select(self.experiments.c.cells_fingerprint,
                                         self.experiments.c.cells)
                               .where(self.experiments.c.name == self.exp.name)).first()
        if row is None and not create:
            raise ConfigError(f"--storage {self.where}: holds no experiment named "
                              f"{self.exp.name!r}; run it first with rearm-dgl experiment run "
                              f"{self.exp.source} --storage URL")
        if row is not None:
            if row.cells_fingerprint != fp:
                stored = set(json.loads(row.cells))
                extra, gone = sorted(set(keys) - stored), sorted(stored - set(keys))
                what = (f"cells only in the file: {extra[:3]}; only in the database: "
                        f"{gone[:3]}" if extra or gone else "the same cells with other settings")
                raise ConfigError(
                    f"--storage {self.where}: experiment {self.exp.name!r} there has other "
                    f"cells or settings than {self.exp.source} ({what}); nothing was changed. "
                    f"Give the experiment another name, or use another database")
            return
        now = time.time()
        try:
            with self.engine.begin() as conn:
                conn.execute(self.experiments.insert().values(
                    name=self.exp.name, cells_fingerprint=fp, cells=json.dumps(keys),
                    created=now))
                conn.execute(self.cells.insert(), [
                    {"experiment": self.exp.name, "key": k, "state": "pending", "attempts": 0}
                    for k in keys])
        except sa.exc.IntegrityError:
            self.check_same_cells(create=False)  # another worker registered it first

    # -- claims -------------------------------------------------------------------------

    def _free(self):
        c = self.cells.c
        stale = time.time() - GRACE_PERIOD
        return self.sa.or_(c.state.in_(("pending", "failed")),
                           self.sa.and_(c.state == "running", c.heartbeat < stale))

    def claim(self, cell: Cell) -> _DbClaim | None:
        """Claim ``cell`` with one atomic UPDATE; None when a live worker holds it or it is done."""
        c, token = self.cells.c, uuid.uuid4().hex
        with self.engine.begin() as conn:
            done = conn.execute(
                self.cells.update()
                .where(c.experiment == self.exp.name, c.key == cell.key, self._free())
                .values(state="running", token=token, worker=json.dumps(workers.identity()),
                        heartbeat=time.time(), attempts=c.attempts + 1)).rowcount
        if done != 1:
            return None
        beat = workers.Heartbeat(lambda: self._beat(cell.key, token), HEARTBEAT_INTERVAL)
        beat.__enter__()
        return _DbClaim(cell.key, token, beat)

    def _beat(self, key: str, token: str) -> None:
        c = self.cells.c
        with self.engine.begin() as conn:
            conn.execute(self.cells.update()
                         .where(c.experiment == self.exp.name, c.key == key, c.token == token,
                                c.state == "running")
                         .values(heartbeat=time.time()))

    def _finish(self, claim: _DbClaim, **values: Any) -> bool:
        claim.heartbeat.__exit__(None, None, None)
        c = self.cells.c
        with self.engine.begin() as conn:
            n = conn.execute(self.cells.update()
                             .where(c.experiment == self.exp.name, c.key == claim.key,
                                    c.token == claim.token, c.state == "running")
                             .values(**values)).rowcount
        return n == 1

    def record(self, claim: _DbClaim, cell: Cell, run_dir: Path) -> bool:
        """Store the finished cell's results and files; False when the claim was lost."""
        results = read_json(run_dir / RESULTS_FILE) or {}
        return self._finish(claim, state="done", results=json.dumps(results),
                            files=pack_files(run_dir), error=None, finished=time.time())

    def fail(self, claim: _DbClaim, message: str) -> None:
        self._finish(claim, state="failed", error=message, token=None)

    def release(self, claim: _DbClaim) -> None:
        """Give an unfinished claim back (the worker was stopped)."""
        self._finish(claim, state="pending", token=None)

    # -- reading ------------------------------------------------------------------------

    def rows(self) -> dict[str, Any]:
        """Every cell row of this experiment by key (without the stored files)."""
        c = self.cells.c
        with self.engine.connect() as conn:
            found = conn.execute(self.sa.select(c.key, c.state, c.worker, c.heartbeat, c.error,
                                                c.attempts, c.results)
                                 .where(c.experiment == self.exp.name)).all()
        return {r.key: r for r in found}

    def is_done(self, cell: Cell, data_fingerprints: Mapping[str, str] | None = None) -> bool:
        c = self.cells.c
        with self.engine.connect() as conn:
            state = conn.execute(self.sa.select(c.state).where(
                c.experiment == self.exp.name, c.key == cell.key)).scalar()
        return state == "done"

    def running(self, cell: Cell) -> str | None:
        row = self.rows().get(cell.key)
        if row is None or row.state != "running" or row.heartbeat < time.time() - GRACE_PERIOD:
            return None
        who = json.loads(row.worker or "{}")
        return f"{who.get('host')} pid {who.get('pid')}"

    def files(self) -> dict[str, bytes]:
        """``{cell key: packed run files}`` of every finished cell."""
        c = self.cells.c
        with self.engine.connect() as conn:
            found = conn.execute(self.sa.select(c.key, c.files).where(
                c.experiment == self.exp.name, c.state == "done")).all()
        return {r.key: r.files for r in found}

    def close(self) -> None:
        self.engine.dispose()


def open_store(exp: Experiment, storage: str | None) -> LocalStore | DatabaseStore:
    """The store of ``exp``: a database for ``--storage URL``, else this machine's folders."""
    return DatabaseStore(exp, storage) if storage else LocalStore(exp)


def pack_files(run_dir: Path, names: Sequence[str] = STORED_FILES) -> bytes:
    """The run files a report reads, in one zip archive."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            if (run_dir / name).is_file():
                zf.write(run_dir / name, name)
    return buf.getvalue()


def unpack_files(blob: bytes, run_dir: Path) -> None:
    """Write the files of :func:`pack_files` into ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        for name in zf.namelist():
            if name in STORED_FILES:
                (run_dir / name).write_bytes(zf.read(name))


__all__ = ["DatabaseStore", "LocalStore", "cells_fingerprint", "check_marker", "open_store",
           "pack_files", "unpack_files"]
