"""VBPR: visual Bayesian personalised ranking (He & McAuley, AAAI 2016).

Paper: https://arxiv.org/abs/1510.01784. Each user has ID factors ``gamma_u`` and content
factors ``theta_u``; each item has ID factors ``gamma_i`` and a linear projection ``E f_i``
of its content features ``f_i``. The preference is

    s(u, i) = gamma_u . gamma_i + theta_u . (E f_i) = [gamma_u || theta_u] . [gamma_i || E f_i],

so users are (U, 2d) and items are the concatenation (I, 2d). As in the MMRec benchmark,
``f_i`` is the concatenation of the text and image features, and the bias terms of the
paper are left out. The loss is BPR plus ``reg_weight`` times the MMRec embedding penalty on
the batch's final representations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

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
    require_features,
)


@dataclass(frozen=True)
class VBPRConfig(ModelConfig):
    """VBPR hyperparameters.

    Attributes:
        embedding_size: d, the width of the ID factors and of the projected features.
        reg_weight: Weight of the L2 penalty on the batch's representations.
    """

    embedding_size: int = 64
    reg_weight: float = 1e-4

    def __post_init__(self):
        check_fields(self, "vbpr", {"embedding_size": ">= 1", "reg_weight": ">= 0"})


@registry.register
class VBPR(Recommender):
    """ID factors plus projected content features, scored by a dot product.

    Args:
        features: (I, F) float32 item content features (text then image, concatenated).
        n_users: Number of users U.
        embedding_size: d (default 64); users and items end up 2d wide.
        reg_weight: L2 weight on the batch's representations (default 1e-4).
    """

    name: ClassVar[str] = "vbpr"
    config_cls: ClassVar[type[ModelConfig]] = VBPRConfig
    needs_features: ClassVar[bool] = True
    #: The relation heterograph is not used.
    needs_graph: ClassVar[bool] = False
    loss_parts: ClassVar[tuple[str, ...]] = ("bpr", "reg")

    def __init__(self, features: Tensor, n_users: int, embedding_size: int = 64,
                 reg_weight: float = 1e-4):
        super().__init__()
        n_items, n_feat = features.shape
        self.reg_weight = reg_weight
        self.register_buffer("features", features)  # (I, F), fixed
        # [gamma_u || theta_u]: (U, 2d); gamma_i: (I, d).
        self.user_emb = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(n_users, 2 * embedding_size)))
        self.item_emb = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, embedding_size)))
        self.proj = nn.Linear(n_feat, embedding_size)  # E
        nn.init.xavier_normal_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    @classmethod
    def build(cls, params: VBPRConfig, data, graph, device) -> VBPR:
        require_features(cls.name, data)
        feats = np.concatenate([data.text_feat, data.image_feat], axis=1).astype(np.float32)
        model = cls(torch.from_numpy(feats), data.n_users, **config_kwargs(params))
        return model.to(device)

    def item_repr(self, items: Tensor | None = None) -> Tensor:
        """``[gamma_i || E f_i]`` for ``items`` (B,), or for every item: (B or I, 2d)."""
        if items is None:
            return torch.cat([self.item_emb, self.proj(self.features)], dim=1)
        return torch.cat([self.item_emb[items], self.proj(self.features[items])], dim=1)

    def embeddings(self) -> tuple[Tensor, Tensor]:
        return self.user_emb, self.item_repr()

    def configure_optimizer(self, lr: float) -> torch.optim.Optimizer:
        return fused_optimizer(torch.optim.Adam, self.parameters(), lr=lr)

    def loss(self, batch: Batch) -> LossOut:
        u = self.user_emb[batch.users]  # (B, 2d)
        p = self.item_repr(batch.pos)  # (B, 2d)
        n = self.item_repr(batch.neg)  # (B, 2d)
        bpr = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        reg = self.reg_weight * emb_norm_loss(u, p, n)
        return LossOut(bpr + reg, {"bpr": bpr.detach(), "reg": reg.detach()})
