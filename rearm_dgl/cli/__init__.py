"""The ``rearm-dgl`` command line: a Click group with one module per command family.

Each module exports its command objects and this package wires them into :data:`main`:
``data`` (:mod:`.data`), ``train``/``evaluate``/``models`` (:mod:`.train`), ``tune``
(:mod:`.tune`), ``experiment`` (:mod:`.experiment`) and ``report`` (:mod:`.report`). Errors
that users can fix (:class:`~rearm_dgl.errors.RearmError`) are printed as ``error: ...``
with exit code 2 and no traceback.
"""

from __future__ import annotations

import click

from rearm_dgl import __version__
from rearm_dgl.cli.data import data
from rearm_dgl.cli.experiment import experiment
from rearm_dgl.cli.report import report
from rearm_dgl.cli.train import evaluate, models, train
from rearm_dgl.cli.tune import tune
from rearm_dgl.errors import RearmError


class RearmGroup(click.Group):
    """A Click group that reports :class:`RearmError` as a one-line message (exit code 2)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RearmError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=RearmGroup, name="rearm-dgl",
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="rearm-dgl")
def main() -> None:
    """REARM multi-modal recommendation on DGL heterographs: train, tune, report.

    Start with `rearm-dgl train`, which trains REARM on the built-in demo dataset.
    """


for _command in (data, train, evaluate, models, tune, experiment, report):
    main.add_command(_command)

__all__ = ["RearmGroup", "main"]
