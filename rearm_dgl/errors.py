"""Errors that rearm-dgl raises for bad input. Each message names the file or field, what is
wrong and how to fix it; the CLI prints it without a traceback."""

from __future__ import annotations


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
    """A configuration key or value is unknown or invalid."""
