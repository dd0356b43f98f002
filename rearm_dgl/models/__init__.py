"""Recommenders behind one contract. Importing this package registers every model."""

from rearm_dgl.models import registry
from rearm_dgl.models.base import Batch, LossOut, ModelConfig, Recommender

__all__ = ["Batch", "LossOut", "ModelConfig", "Recommender", "registry"]
