"""Where studies live: an Optuna journal file on one machine, or a database for many.

By default a study is the journal file ``studies/<study>/journal.log``, which several
processes on one machine can share; any SQLAlchemy URL (PostgreSQL, MySQL) serves workers
on many machines, with heartbeats so that the trials of a killed worker are failed and
retried. A journal file is checked before Optuna reads it: a record torn by a kill in the
middle of an append is cut off, and a corrupt or foreign file is refused by name.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from rearm_dgl.tuning.settings import JOURNAL_FILE, StudyError

#: A trial killed with its worker is retried at most this many times.
MAX_RETRY = 2
#: RDB heartbeats: a running trial whose worker has been silent for GRACE_PERIOD seconds is
#: failed and re-queued by the next worker that starts a trial.
HEARTBEAT_INTERVAL = 20
GRACE_PERIOD = 60
#: Seconds to wait for a database connection before giving up.
CONNECT_TIMEOUT = 5


@dataclass(frozen=True)
class StorageSpec:
    """Where a study lives: a journal file (``url`` None) or a SQLAlchemy database URL."""

    url: str | None = None
    journal_path: Path | None = None

    @property
    def is_journal(self) -> bool:
        return self.url is None

    def describe(self) -> str:
        """A printable name (the database password hidden)."""
        if self.is_journal:
            return str(self.journal_path)
        return describe_url(self.url)


def parse_storage(url: str | None, study_dir: Path) -> StorageSpec:
    """Check a ``--storage`` value without connecting; None means the study's journal file.

    Raises:
        StudyError: for a malformed URL or a database driver that is not installed.
    """
    if url is None or url == "":
        return StorageSpec(None, study_dir / JOURNAL_FILE)
    return StorageSpec(parse_database_url(url), None)


def parse_database_url(url: str) -> str:
    """Check a database URL without connecting and return it with an installed driver.

    Raises:
        StudyError: for a malformed URL or a database driver that is not installed.
    """
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    example = "postgresql://user:password@host:5432/dbname"
    if "://" not in url:
        raise StudyError(f"--storage {url!r}: not a database URL; expected a SQLAlchemy URL "
                         f"such as {example}, or leave --storage out to work on this machine "
                         f"only")
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StudyError(f"--storage {url!r}: malformed database URL ({exc}); expected e.g. "
                         f"{example}") from None
    parsed = _with_installed_driver(parsed)
    shown = parsed.render_as_string(hide_password=True)
    try:
        parsed.get_dialect().import_dbapi()
    except NoSuchModuleError:
        hint = " (did you mean postgresql://?)" if parsed.drivername.startswith("postgres") else ""
        raise StudyError(f"--storage {shown}: unknown database kind {parsed.drivername!r}"
                         f"{hint}; use e.g. {example}") from None
    except ImportError as exc:
        raise StudyError(f"--storage {shown}: the database driver is not installed ({exc}); "
                         f"for PostgreSQL: pip install 'rearm-dgl[postgres]'") from None
    return parsed.render_as_string(hide_password=False)


def describe_url(url: str) -> str:
    """A database URL with its password hidden."""
    import sqlalchemy

    return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)


def _with_installed_driver(url: Any) -> Any:
    """A bare ``postgresql://`` URL with the PostgreSQL driver that is installed.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3; the ``postgres`` extra installs
    psycopg2, so use it when psycopg 3 is absent.
    """
    if url.drivername != "postgresql":
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return url.set(drivername="postgresql+psycopg2")
    return url


def engine_kwargs(url: str) -> dict[str, Any]:
    import sqlalchemy

    backend = sqlalchemy.engine.make_url(url).get_backend_name()
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if backend in ("postgresql", "mysql", "mariadb"):
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    return kwargs


def check_reachable(url: str | None) -> None:
    """Connect once to a database (within CONNECT_TIMEOUT s) without writing to it; a
    journal storage (``url`` None) needs no check.

    Raises:
        StudyError: naming the server when it cannot be reached or refuses the login.
    """
    if url is None:
        return
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                      **{k: v for k, v in engine_kwargs(url).items()
                                         if k != "pool_pre_ping"})
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise StudyError(f"--storage {describe_url(url)}: cannot connect to the database "
                         f"({reason[0] if reason else type(exc).__name__}); check that the "
                         f"server runs and is reachable, and the user, password and database "
                         f"name") from None
    finally:
        engine.dispose()


def open_storage(spec: StorageSpec, echo: Callable[[str], None] = print
                 ) -> optuna.storages.BaseStorage:
    """Open the storage (creating the journal file or the database tables if needed).

    Raises:
        StudyError: for a journal file that is not an Optuna journal (naming the file), or
            database tables that cannot be set up.
    """
    if spec.is_journal:
        from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

        spec.journal_path.parent.mkdir(parents=True, exist_ok=True)
        path = str(spec.journal_path)
        # The lock serialises appends from several processes; a lock left by a killed
        # process is broken after its grace period.
        lock = JournalFileSymlinkLock(path, grace_period=30)
        check_journal(spec.journal_path, lock, echo)
        try:
            return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=lock))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise StudyError(_journal_refusal(spec.journal_path, f"Optuna cannot replay it "
                                              f"({type(exc).__name__}: {exc})")) from None
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
                return optuna.storages.RDBStorage(
                    spec.url, engine_kwargs=engine_kwargs(spec.url),
                    heartbeat_interval=HEARTBEAT_INTERVAL, grace_period=GRACE_PERIOD,
                    heartbeat_stale_trial_callback=retry)
        except SQLAlchemyError as exc:
            # Workers that open a fresh database at once race to create Optuna's tables;
            # the loser finds them on the next try.
            if attempt == 4:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
                raise StudyError(f"--storage {spec.describe()}: cannot set up the study tables "
                                 f"({reason[0] if reason else type(exc).__name__}); check "
                                 f"that the user may create tables in that database") from None
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def check_journal(path: Path, lock: Any, echo: Callable[[str], None] = print) -> None:
    """Check that every record of a journal file is one Optuna journal operation.

    A kill in the middle of an append leaves a last record without its newline; it was never
    complete, so no process has read it, and it is cut off (under the journal's lock, so
    no append races the cut). Any other bad line is refused: the message names the file,
    the line and the repair.

    Raises:
        StudyError: for a corrupt or foreign file.
    """
    if not path.is_file():
        return
    with open(path, "rb") as fh:
        data = fh.read()
    if data and not data.endswith(b"\n"):
        with _held(lock):
            with open(path, "rb+") as fh:
                data = fh.read()
                keep = data.rfind(b"\n") + 1
                if keep < len(data):
                    fh.truncate(keep)
                    echo(f"{path}: cut off a last record torn by a kill ({len(data) - keep} "
                         f"bytes without an end of line)")
                    data = data[:keep]
    for number, line in enumerate(data.splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or "op_code" not in record:
            raise StudyError(_journal_refusal(path, f"line {number} is not an Optuna journal "
                                              f"record", number))


def _journal_refusal(path: Path, problem: str, line: int | None = None) -> str:
    where = f"line {line}" if line else "the damaged lines"
    return (f"{path}: {problem}. If the file is a study's {JOURNAL_FILE}, keep a copy and "
            f"delete {where} (a record damaged by a crash), then rerun; if it is another file, "
            f"give the study another --study name or --studies-dir")


@contextmanager
def _held(lock: Any):
    """Hold an Optuna journal lock in a ``with`` block."""
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def existing_study(spec: StorageSpec, name: str) -> tuple[optuna.storages.BaseStorage | None,
                                                            bool]:
    """(storage or None, whether the study exists), touching nothing for a new journal study."""
    if spec.is_journal and not spec.journal_path.is_file():
        return None, False
    check_reachable(spec.url)
    storage = open_storage(spec)
    return storage, name in {s.study_name for s in storage.get_all_studies()}

