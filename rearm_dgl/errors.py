"""Errors that rearm-dgl raises for bad input. Each message names the file or field, what is
wrong and how to fix it; the CLI prints it without a traceback."""

from __future__ import annotations

import errno


class RearmError(Exception):
    """Base class of the errors the CLI reports as plain messages."""


class DataError(RearmError):
    """A dataset file or directory is missing or malformed."""

    def __init__(self, path, problem: str, fix: str):
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: {problem}\n  fix: {fix}")


class ConfigError(RearmError):
    """A configuration key or value is unknown or invalid.

    Attributes:
        key: The ``section.field`` the message is about, when there is one; lets a caller
            that knows where the value came from (a YAML file) name that source too.
    """

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


# What to do about the OS errors a user can run into with paths they chose.
_OS_FIXES = {
    errno.EACCES: "check its permissions, or choose a folder you can write to",
    errno.EPERM: "check its permissions, or choose a folder you can write to",
    errno.EROFS: "the file system is read-only; choose a writable location",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EEXIST: "something of that name is in the way; remove it or choose another path",
    errno.EISDIR: "it is a folder; give a file path",
    errno.ENOSPC: "the disk is full; free some space or choose another location",
    errno.EDQUOT: "the disk quota is used up; free some space or choose another location",
    errno.ENOENT: "check the path",
    errno.ENAMETOOLONG: "use a shorter path",
}


def describe_os_error(exc: OSError) -> str:
    """One line for an :class:`OSError`: the path, the problem and what to do.

    Example: ``runs/demo: Permission denied; check its permissions, or choose a folder you
    can write to``.
    """
    problem = exc.strerror or str(exc) or type(exc).__name__
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    head = f"{' -> '.join(paths)}: {problem}" if paths else problem
    fix = _OS_FIXES.get(exc.errno)
    return f"{head}; {fix}" if fix else head
