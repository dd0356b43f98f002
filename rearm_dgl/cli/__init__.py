"""The ``rearm-dgl`` command line: a Click group with one module per command family.

Each module exports its command objects and this package wires them into :data:`main`:
``data`` (:mod:`.data`), ``train``/``evaluate``/``models`` (:mod:`.train`), ``tune``
(:mod:`.tune`), ``experiment`` (:mod:`.experiment`) and ``report`` (:mod:`.report`).

No command shows a traceback for a problem the user can fix. Errors in the input
(:class:`~rearm_dgl.errors.RearmError`) are printed as ``error: ...`` with exit code 2; an
:class:`OSError` (a read-only folder, a path under a file, a full disk) is printed as one
``error: <path>: <problem>; <fix>`` line with exit code 1. Warnings of the library's loggers
reach the terminal as ``warning: ...`` lines.
"""

from __future__ import annotations

import errno
import logging

import click

from rearm_dgl import __version__
from rearm_dgl.cli.data import data
from rearm_dgl.cli.experiment import experiment
from rearm_dgl.cli.report import report
from rearm_dgl.cli.train import evaluate, models, train
from rearm_dgl.cli.tune import tune
from rearm_dgl.errors import RearmError, describe_os_error

EXIT_INPUT = 2
EXIT_OS = 1


class _EchoHandler(logging.Handler):
    """Log records of WARNING and above as ``warning: <message>`` lines on stderr.

    It looks up stderr when a record arrives, so Click's test runner captures it too.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(f"{record.levelname.lower()}: {record.getMessage()}", err=True)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _install_log_handler() -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _EchoHandler)]:
        root.removeHandler(handler)
    root.addHandler(_EchoHandler(logging.WARNING))


class RearmGroup(click.Group):
    """A Click group that turns user-fixable errors into one line and an exit code."""

    def invoke(self, ctx: click.Context):
        _install_log_handler()
        try:
            return super().invoke(ctx)
        except RearmError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_INPUT)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # `rearm-dgl models | head`: Click quietens it
                raise
            click.echo(f"error: {describe_os_error(exc)}", err=True)
            ctx.exit(EXIT_OS)


@click.group(cls=RearmGroup, name="rearm-dgl", invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="rearm-dgl")
@click.pass_context
def main(ctx: click.Context) -> None:
    """REARM multi-modal recommendation on DGL heterographs: train, tune, report.

    Start with `rearm-dgl train`, which trains REARM on the built-in demo dataset.
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


for _command in (data, train, evaluate, models, tune, experiment, report):
    main.add_command(_command)

__all__ = ["RearmGroup", "main"]
