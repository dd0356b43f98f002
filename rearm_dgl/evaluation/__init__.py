"""Evaluation: per-user top-K metrics and the full-ranking protocol."""

from rearm_dgl.evaluation.metrics import METRICS, metric_names, topk_metrics
from rearm_dgl.evaluation.protocol import (
    EvalResult,
    Scorer,
    evaluate,
    load_per_user,
    model_scorer,
    popularity_scorer,
    save_per_user,
)

__all__ = [
    "METRICS", "EvalResult", "Scorer", "evaluate", "load_per_user", "metric_names",
    "model_scorer", "popularity_scorer", "save_per_user", "topk_metrics",
]
