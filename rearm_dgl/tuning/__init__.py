"""Hyperparameter studies with Optuna, one concern per module:

- :mod:`~rearm_dgl.tuning.space`: search spaces (the only ``trial.suggest_*``); the default
  spaces ship in ``rearm_dgl/studies/<model>.yaml``.
- :mod:`~rearm_dgl.tuning.storage`: the journal file or database a study lives in.
- :mod:`~rearm_dgl.tuning.settings`: what a study is (name, folder layout, stored settings).
- :mod:`~rearm_dgl.tuning.objective`: one trial = one fit; sampler, pruner.
- :mod:`~rearm_dgl.tuning.worker`: a worker runs trials until the budget is covered.
- :mod:`~rearm_dgl.tuning.study`: plan, create or resume, run the workers
  (:mod:`rearm_dgl.workers`), write the outputs.
- :mod:`~rearm_dgl.tuning.outputs`: ``trials.csv``, ``best.yaml``, plots, TensorBoard.
"""

from rearm_dgl.tuning.objective import PRUNERS, FitRunner, WorkerSpec
from rearm_dgl.tuning.outputs import StudyResult, best_config, summarize, write_outputs
from rearm_dgl.tuning.settings import BEST_YAML, JOURNAL_FILE, StudyError, StudySettings
from rearm_dgl.tuning.space import ParamSpec, SearchSpace, default_space, load_space, parse_space
from rearm_dgl.tuning.storage import StorageSpec, check_reachable, open_storage, parse_storage
from rearm_dgl.tuning.study import run_study
from rearm_dgl.tuning.worker import recover_dead_trials, run_worker

__all__ = [
    "BEST_YAML", "FitRunner", "JOURNAL_FILE", "ParamSpec", "PRUNERS", "SearchSpace",
    "StorageSpec", "StudyError", "StudyResult", "StudySettings", "WorkerSpec", "best_config",
    "check_reachable", "default_space", "load_space", "open_storage", "parse_space",
    "parse_storage", "recover_dead_trials", "run_study", "run_worker", "summarize",
    "write_outputs",
]
