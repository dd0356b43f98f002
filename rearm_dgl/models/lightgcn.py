"""LightGCN: linear propagation over the user-item graph (He et al., SIGIR 2020).

Paper: https://arxiv.org/abs/2002.02126. Free ID embeddings ``E^(0)`` are propagated over the
symmetric-normalised interaction graph with no transformation and no non-linearity,

    e_u^(l+1) = sum_{i in N(u)} e_i^(l) / sqrt(|N(u)| |N(i)|),
    e_i^(l+1) = sum_{u in N(i)} e_u^(l) / sqrt(|N(i)| |N(u)|),

and the final representation is the mean of layers 0..L (alpha_l = 1 / (L + 1)). The score is
the dot product. The loss is BPR plus an L2 penalty on the batch's layer-0 (ego) embeddings,
scaled as the MMRec benchmark scales it: the sum of the three batch matrices' Frobenius
norms (not squared), divided by the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from rearm_dgl.graphs.propagate import Propagation
from rearm_dgl.graphs.schema import INTERACTED_BY, INTERACTS, ITEM, USER
from rearm_dgl.models import registry
from rearm_dgl.models.base import (
    Batch,
    LossOut,
    ModelConfig,
    Recommender,
    bpr_loss,
    check_fields,
    config_kwargs,
    emb_norm_loss,
    fused_optimizer,
    xavier_parameter,
)


@dataclass(frozen=True)
class LightGCNConfig(ModelConfig):
    """LightGCN hyperparameters.

    Attributes:
        embedding_size: d, the width of the ID embeddings.
        n_layers: L, propagation layers over the interaction graph (0 gives BPR-MF).
        reg_weight: Weight of the L2 penalty on the batch's ego embeddings.
    """

    embedding_size: int = 64
    n_layers: int = 4
    reg_weight: float = 1e-4

    def __post_init__(self):
        check_fields(self, "lightgcn", {"embedding_size": ">= 1", "n_layers": ">= 0",
                                        "reg_weight": ">= 0"})


@registry.register
class LightGCN(Recommender):
    """LightGCN over the interaction relations of the heterograph.

    Args:
        graph: The relation heterograph; only ``INTERACTS`` / ``INTERACTED_BY`` are read, with
            their stored symmetric-normalised weights ``1 / sqrt(deg(u) deg(i))``.
        n_users: Number of users U.
        n_items: Number of items I.
        embedding_size: d (default 64).
        n_layers: L (default 4).
        reg_weight: L2 weight on the batch's ego embeddings (default 1e-4).
    """

    name: ClassVar[str] = "lightgcn"
    config_cls: ClassVar[type[ModelConfig]] = LightGCNConfig
    needs_features: ClassVar[bool] = False
    loss_parts: ClassVar[tuple[str, ...]] = ("bpr", "reg")

    def __init__(self, graph, n_users: int, n_items: int, embedding_size: int = 64,
                 n_layers: int = 4, reg_weight: float = 1e-4):
        super().__init__()
        self.n_layers = n_layers
        self.reg_weight = reg_weight
        self.prop = Propagation(graph, [(INTERACTS, 1.0), (INTERACTED_BY, 1.0)])
        # Xavier-uniform initialisation, as the MMRec benchmark does for LightGCN.
        self.user_emb, self.item_emb = xavier_parameter(n_users, embedding_size), xavier_parameter(n_items, embedding_size)

    @classmethod
    def build(cls, params: LightGCNConfig, data, graph, device) -> LightGCN:
        model = cls(graph, data.n_users, data.n_items, **config_kwargs(params))
        return model.to(device)

    def propagate(self) -> tuple[Tensor, Tensor]:
        """Mean of layers 0..L of the propagated embeddings: users (U, d), items (I, d)."""
        out = self.prop({USER: self.user_emb, ITEM: self.item_emb}, self.n_layers, "mean")
        return out[USER], out[ITEM]

    def embeddings(self) -> tuple[Tensor, Tensor]:
        return self.propagate()

    def configure_optimizer(self, lr: float) -> torch.optim.Optimizer:
        return fused_optimizer(torch.optim.Adam, self.parameters(), lr=lr)

    def loss(self, batch: Batch) -> LossOut:
        users, items = self.propagate()  # full-graph pass: every batch sees fresh layers
        u = users[batch.users]  # (B, d)
        bpr = bpr_loss((u * items[batch.pos]).sum(-1), (u * items[batch.neg]).sum(-1))
        reg = self.reg_weight * emb_norm_loss(
            self.user_emb[batch.users], self.item_emb[batch.pos], self.item_emb[batch.neg])
        return LossOut(bpr + reg, {"bpr": bpr.detach(), "reg": reg.detach()})
