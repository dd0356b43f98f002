"""The one way to run many fits: worker processes, threads, claims, heartbeats, progress.

Both ``rearm-dgl tune`` (trials) and ``rearm-dgl experiment run`` (cells) use this module:

- :func:`run_workers` starts N spawned processes (or runs one in this process), shares the
  CPU threads among them, and ties their lives to the parent: when the parent dies (even by
  SIGKILL) its workers receive SIGTERM, and SIGTERM or Ctrl-C of the parent stops them
  cleanly. In a worker, SIGTERM becomes :class:`KeyboardInterrupt`, so the running fit stops
  where a rerun of the same command resumes it.
- Work is claimed one unit at a time from a :class:`ClaimStore`. On one machine,
  :class:`FileClaims` uses an OS file lock per unit (``filelock``): the kernel drops it when
  its process dies, so a crash never leaves a stale claim and two processes never hold one
  unit. Many machines share a database store instead (see
  :mod:`rearm_dgl.experiments.store`), whose claims expire when their :class:`Heartbeat`
  stops.
- :func:`identity` and :func:`is_dead` tell whether a recorded worker process on this
  machine still runs (used where a storage has no heartbeat, such as Optuna's journal).
- :class:`Progress` rate-limits the per-epoch lines of ``fit(progress=...)`` and tags them.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

#: A worker's per-epoch progress line is printed at most this often (seconds) ...
PROGRESS_SECONDS = 60.0
#: ... unless this many epochs passed since the last one.
PROGRESS_EPOCHS = 10
#: Seconds the parent waits for stopped workers before killing them.
STOP_WAIT = 30.0


class Interrupted(KeyboardInterrupt):
    """SIGTERM or Ctrl-C: stop starting work, leave what runs resumable."""


# ---------------------------------------------------------------------------------------
# Processes and threads


def share_threads(jobs: int) -> int:
    """Torch threads for each of ``jobs`` workers on this machine's cores (at least 1)."""
    return max(1, (os.cpu_count() or 1) // max(jobs, 1))


def interrupt_on_sigterm() -> Any:
    """Make SIGTERM raise :class:`Interrupted` in the main thread (as Ctrl-C does).

    Outside the main thread (where Python cannot set handlers) nothing changes.

    Returns:
        The previous handler, for :func:`restore_sigterm`.
    """
    if threading.current_thread() is not threading.main_thread():
        return _UNCHANGED

    def handler(signum, frame):
        raise Interrupted(f"signal {signum}")

    return signal.signal(signal.SIGTERM, handler)


def restore_sigterm(previous: Any) -> None:
    """Put back the SIGTERM handler that :func:`interrupt_on_sigterm` replaced."""
    if previous is not _UNCHANGED:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


_UNCHANGED = object()


def run_workers(target: Callable[..., None], args: Sequence[tuple], *, name: str,
                threads: int | None = None) -> list[str]:
    """Run ``target(index, *args[index])`` in ``len(args)`` spawned worker processes.

    Each worker gets ``threads`` torch threads (default: :func:`share_threads`). Workers die
    with the parent: the kernel sends them SIGTERM when it exits, however it exits. SIGTERM
    or Ctrl-C of the parent forwards SIGTERM to every worker, waits up to STOP_WAIT
    seconds for them to stop (killing the rest), then raises :class:`Interrupted`.

    Returns:
        One line per worker that exited with a non-zero code.
    """
    threads = threads or share_threads(len(args))
    # spawn: a forked child would inherit torch's thread pools and locks of the parent.
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_child_main, name=f"{name}-{k}",
                         args=(target, k, tuple(a), os.getpid(), threads))
             for k, a in enumerate(args)]
    previous = interrupt_on_sigterm()
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        _stop(procs)
        raise Interrupted("stopped") from None
    finally:
        restore_sigterm(previous)
    return [f"worker {k} exited with code {p.exitcode}" for k, p in enumerate(procs)
            if p.exitcode != 0]


def _stop(procs: Sequence[Any]) -> None:
    # Ignore a second signal while the workers wind down.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: the worker stops its fit resumably
        deadline = time.monotonic() + STOP_WAIT
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _child_main(target: Callable[..., None], index: int, args: tuple, parent: int,
                threads: int) -> None:
    _die_with_parent(parent)
    interrupt_on_sigterm()
    import torch

    torch.set_num_threads(threads)
    try:
        target(index, *args)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _die_with_parent(parent: int) -> None:
    """Receive SIGTERM when the parent process exits (Linux), or poll for it elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(2)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


# ---------------------------------------------------------------------------------------
# Worker liveness


def identity() -> dict[str, Any]:
    """This process as a worker: host, pid, boot id and start time (tells a reused pid)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "boot": _boot_id(),
            "start": _process_start(os.getpid())}


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot ("" when unknown)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def is_dead(worker: Mapping[str, Any]) -> bool:
    """Whether a worker recorded on this machine is gone (other machines: never assumed)."""
    if worker.get("host") != socket.gethostname():
        return False
    if worker.get("boot") and _boot_id() and worker["boot"] != _boot_id():
        return True  # this machine rebooted since
    pid = int(worker.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    start = worker.get("start")
    return bool(start) and _process_start(pid) not in ("", start)


# ---------------------------------------------------------------------------------------
# Claims and heartbeats


class Claim(Protocol):
    """A unit of work held by this process until :meth:`release`."""

    key: str

    def release(self) -> None: ...


class ClaimStore(Protocol):
    """Hands each unit of work to one process at a time."""

    def claim(self, key: str) -> Claim | None:
        """Claim ``key``; None when another live process holds it."""


class _FileClaim:
    def __init__(self, key: str, lock: Any):
        self.key, self._lock = key, lock

    def release(self) -> None:
        self._lock.release()


class FileClaims:
    """Claims on one machine: one OS file lock per unit in ``folder``.

    The kernel releases a process's locks when it dies, so no claim outlives its holder
    and no lock file is ever read as stale while another process writes it.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def claim(self, key: str) -> _FileClaim | None:
        from filelock import FileLock, Timeout

        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.folder / f"{key}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return None
        return _FileClaim(key, lock)

    def held(self, key: str) -> bool:
        """Whether a live process holds ``key`` now (for status displays)."""
        from filelock import FileLock, Timeout

        path = self.folder / f"{key}.lock"
        if not path.exists():
            return False
        lock = FileLock(path)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return True
        lock.release()
        return False


class Heartbeat:
    """Call ``beat()`` every ``interval`` seconds in a daemon thread while in a ``with``.

    A beat that raises is retried at the next interval (a database may blip); the holder
    learns of a lost claim through the store, not through this thread.
    """

    def __init__(self, beat: Callable[[], None], interval: float):
        self.beat, self.interval = beat, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - keep beating through transient errors
                pass

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------------------
# Progress


class Progress:
    """Tagged, rate-limited per-epoch lines for ``fit(progress=...)``.

    The first epoch is always shown; after that a line when PROGRESS_SECONDS passed or
    PROGRESS_EPOCHS epochs went by since the last one.
    """

    def __init__(self, tag: str, echo: Callable[[str], None], seconds: float | None = None,
                 epochs: int | None = None):
        self.tag, self.echo = tag, echo
        self.seconds = PROGRESS_SECONDS if seconds is None else seconds
        self.epochs = PROGRESS_EPOCHS if epochs is None else epochs
        self._last_time = -float("inf")
        self._count = 0

    def __call__(self, line: str) -> None:
        self._count += 1
        now = time.monotonic()
        if self._count == 1 or now - self._last_time >= self.seconds or (
                self._count % self.epochs == 0):
            self._last_time = now
            self.echo(f"{self.tag} {line}")


@contextmanager
def quiet_fit_warnings():
    """Silence ``fit``'s own "continue with rearm-dgl train --resume" advice: under a
    worker, the command that started the worker is what resumes the work."""
    log = logging.getLogger("rearm_dgl.train")
    before = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(before)


def duration(seconds: float) -> str:
    """``3h05m``, ``4m10s`` or ``12s``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


__all__ = ["Claim", "ClaimStore", "FileClaims", "Heartbeat", "Interrupted", "Progress",
           "duration", "identity", "quiet_fit_warnings", "interrupt_on_sigterm", "is_dead", "restore_sigterm",
           "run_workers", "share_threads"]
