"""BPR-MF: matrix factorisation trained with the BPR loss (Rendle et al., UAI 2009).

Paper: https://arxiv.org/abs/1205.2618. A user and an item each get a free d-dimensional
embedding; the score is their dot product,

    s(u, i) = e_u . e_i,
    loss = -mean log sigmoid(s(u, i+) - s(u, i-))
           + reg_weight * (||E_u|| + ||E_i+|| + ||E_i-||) / B,

with the penalty over the batch's embedding matrices (Frobenius norms, not squared: the MMRec
benchmark's convention, so its reg_weight grid means the same here), trained with Adam. It needs neither features nor the relation graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from rearm_dgl.errors import ConfigError
from rearm_dgl.models import registry
from rearm_dgl.models.base import (
    Batch,
    LossOut,
    ModelConfig,
    Recommender,
    bpr_loss,
    emb_norm_loss,
)


@dataclass(frozen=True)
class MFConfig(ModelConfig):
    """BPR-MF hyperparameters.

    Attributes:
        embedding_size: d, the width of the user and item embeddings.
        reg_weight: Weight of the L2 penalty on the batch's embeddings.
    """

    embedding_size: int = 64
    reg_weight: float = 1e-5

    def __post_init__(self):
        if self.embedding_size < 1:
            raise ConfigError(f"mf.embedding_size: must be >= 1, got {self.embedding_size}")
        if self.reg_weight < 0:
            raise ConfigError(f"mf.reg_weight: must be >= 0, got {self.reg_weight}")


@registry.register
class MF(Recommender):
    """Matrix factorisation with the BPR pairwise loss.

    Args:
        n_users: Number of users U.
        n_items: Number of items I.
        embedding_size: d (default 64).
        reg_weight: L2 weight on the batch's embeddings (default 1e-5).
    """

    name: ClassVar[str] = "mf"
    config_cls: ClassVar[type[ModelConfig]] = MFConfig
    needs_features: ClassVar[bool] = False
    #: The trainer skips building the relation heterograph for this model.
    needs_graph: ClassVar[bool] = False
    loss_parts: ClassVar[tuple[str, ...]] = ("bpr", "reg")

    def __init__(self, n_users: int, n_items: int, embedding_size: int = 64,
                 reg_weight: float = 1e-5):
        super().__init__()
        self.reg_weight = reg_weight
        self.user_emb = nn.Parameter(torch.empty(n_users, embedding_size))  # (U, d)
        self.item_emb = nn.Parameter(torch.empty(n_items, embedding_size))  # (I, d)
        nn.init.xavier_normal_(self.user_emb)
        nn.init.xavier_normal_(self.item_emb)

    @classmethod
    def build(cls, params: MFConfig, data, graph, device) -> MF:
        model = cls(data.n_users, data.n_items, params.embedding_size, params.reg_weight)
        return model.to(device)

    def embeddings(self) -> tuple[Tensor, Tensor]:
        return self.user_emb, self.item_emb

    def loss(self, batch: Batch) -> LossOut:
        u = self.user_emb[batch.users]  # (B, d)
        p = self.item_emb[batch.pos]  # (B, d)
        n = self.item_emb[batch.neg]  # (B, d)
        bpr = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        reg = self.reg_weight * emb_norm_loss(u, p, n)
        total = bpr + reg
        return LossOut(total, {"bpr": bpr.detach(), "reg": reg.detach()})
