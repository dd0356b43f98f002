"""Experiment files (models x datasets x variants x seeds), run cell by cell.

- :mod:`~rearm_dgl.experiments.spec`: the file format and its cells.
- :mod:`~rearm_dgl.experiments.store`: claims and results, in run folders on one machine
  or in a database shared by many.
- :mod:`~rearm_dgl.experiments.run`: the cells through the workers of
  :mod:`rearm_dgl.workers`.
- :mod:`~rearm_dgl.experiments.status`: where each cell stands.
"""

from rearm_dgl.experiments.run import RunSummary, run_cell, run_experiment
from rearm_dgl.experiments.spec import Cell, Experiment, check_datasets, load_experiment
from rearm_dgl.experiments.status import (
    STATES,
    CellStatus,
    cell_status,
    experiment_status,
    format_status,
)
from rearm_dgl.experiments.store import DatabaseStore, LocalStore, open_store

__all__ = ["Cell", "CellStatus", "DatabaseStore", "Experiment", "LocalStore", "RunSummary",
           "STATES", "cell_status", "check_datasets", "experiment_status", "format_status",
           "load_experiment", "open_store", "run_cell", "run_experiment"]
