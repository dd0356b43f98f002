"""SLMRec: self-supervised learning for multimedia recommendation (Tao et al., TMM 2022).

Paper: https://arxiv.org/abs/2107.05397. Three LightGCNs run over the same user-item graph,
all starting from the same user ID embeddings: one on the item ID embeddings, one per
modality on projected, row-normalised item features.

    F_v = Dense_v(rownorm(X_v)),  F_t = Dense_t(rownorm(X_t))              (I, d)
    G_m = mean_{l=0..3} A^l [E_u; F_m]  for F_id = E_i, F_v, F_t            (A: sym-normalised)
    u = Fuse_u([G_id,u || G_v,u || G_t,u]),  i = Fuse_i([G_id,i || G_v,i || G_t,i])

The main loss is an in-batch softmax (InfoNCE over cosine / temp, the other batch positives
are the negatives; the sampled negative is unused). The self-supervised task is FAC
(fine-and-coarse): on the batch's positive items,

    x = g_iv(G_id,i),  y = g_v(G_v,i),   L_v = CE(x y^T / ssl_temp)
    x' = g_ivat(g_iva(x)),  z = g_t(G_t,i),   L_t = CE(x' z^T / ssl_temp)

with raw dot products (no normalisation, as in the reference code), and
``total = L_main + ssl_alpha (L_v + L_t)``; Adam adds ``weight_decay`` (coupled L2). Where the
paper and the reference code differ, this follows the code: only FAC is implemented (MMRec's
other tasks cannot run), and with ``eval_cached`` the evaluation scores the user and item
vectors of the last training batch, as MMRec does, instead of recomputing them. MMRec scores
``sigmoid(u . i)``; the sigmoid is monotone, so the plain dot product ranks the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from rearm_dgl.config import check
from rearm_dgl.graphs.propagate import Propagation
from rearm_dgl.graphs.schema import INTERACTED_BY, INTERACTS, ITEM, USER
from rearm_dgl.models import registry
from rearm_dgl.models.base import (
    Batch,
    LossOut,
    ModelConfig,
    Recommender,
    add_feature_table,
    add_last_batch_cache,
    check_fields,
    config_kwargs,
    feature_tensors,
    fused_optimizer,
    info_nce,
    store_last_batch,
    xavier_linear,
    xavier_parameter,
)


@dataclass(frozen=True)
class SLMRecConfig(ModelConfig):
    """SLMRec hyperparameters (MMRec's ``SLMRec.yaml``, FAC task, concatenation fusion).

    Attributes:
        embedding_size: d, the width of every branch (``recdim``).
        n_layers: LightGCN layers of each branch (``layer_num``).
        temp: Temperature of the main in-batch softmax.
        ssl_temp: Temperature of the FAC terms.
        ssl_alpha: Weight of the FAC loss.
        weight_decay: Adam's coupled L2 on every parameter.
        eval_cached: Score with the vectors of the last training batch (the reference);
            False recomputes them from the current weights.
    """

    embedding_size: int = 64
    n_layers: int = 3
    temp: float = 0.2
    ssl_temp: float = 0.5
    ssl_alpha: float = 0.1
    weight_decay: float = 1e-4
    eval_cached: bool = True

    def __post_init__(self):
        check(self.embedding_size >= 2, "slmrec.embedding_size",
               "must be >= 2 (the last FAC heads have width embedding_size / 2)")
        check_fields(self, "slmrec", {"n_layers": ">= 0", "temp": "> 0", "ssl_temp": "> 0",
                                      "ssl_alpha": ">= 0", "weight_decay": ">= 0"})


@registry.register
class SLMRec(Recommender):
    """SLMRec (FAC) over the interaction relations of the heterograph.

    Args:
        graph: The relation heterograph; only ``INTERACTS`` / ``INTERACTED_BY`` are read, with
            their stored symmetric-normalised weights.
        image_feat: (I, F_v) float32 image features (row-normalised here, then frozen).
        text_feat: (I, F_t) float32 text features (likewise).
        n_users: Number of users U.
        embedding_size: d (default 64).
        n_layers: LightGCN layers per branch (default 3).
        temp: Main-loss temperature (default 0.2).
        ssl_temp: FAC temperature (default 0.5).
        ssl_alpha: FAC weight (default 0.1).
        weight_decay: Adam's L2 (default 1e-4).
        eval_cached: Evaluate with the last training batch's vectors (default True).
    """

    name: ClassVar[str] = "slmrec"
    config_cls: ClassVar[type[ModelConfig]] = SLMRecConfig
    needs_features: ClassVar[bool] = True
    loss_parts: ClassVar[tuple[str, ...]] = ("main", "ssl")

    def __init__(self, graph, image_feat: Tensor, text_feat: Tensor, n_users: int,
                 embedding_size: int = 64, n_layers: int = 3, temp: float = 0.2,
                 ssl_temp: float = 0.5, ssl_alpha: float = 0.1, weight_decay: float = 1e-4,
                 eval_cached: bool = True):
        super().__init__()
        n_items, d = image_feat.shape[0], embedding_size
        self.n_layers, self.d = n_layers, d
        self.temp, self.ssl_temp, self.ssl_alpha = temp, ssl_temp, ssl_alpha
        self.weight_decay, self.eval_cached = weight_decay, eval_cached
        self.prop = Propagation(graph, [(INTERACTS, 1.0), (INTERACTED_BY, 1.0)])
        self.user_emb, self.item_emb = xavier_parameter(n_users, d), xavier_parameter(n_items, d)
        # Row-normalised once, then frozen.
        add_feature_table(self, "image_feat", F.normalize(image_feat, dim=1), trainable=False)
        add_feature_table(self, "text_feat", F.normalize(text_feat, dim=1), trainable=False)
        self.image_dense = xavier_linear(image_feat.shape[1], d)
        self.text_dense = xavier_linear(text_feat.shape[1], d)
        self.user_fuse = xavier_linear(3 * d, d)
        self.item_fuse = xavier_linear(3 * d, d)
        # FAC heads: ID -> visual, then a further chain ID -> textual.
        self.head_iv = xavier_linear(d, d)
        self.head_v = xavier_linear(d, d)
        self.head_iva = xavier_linear(d, d)
        self.head_ivat = xavier_linear(d, d // 2)
        self.head_t = xavier_linear(d, d // 2)
        # The fused vectors of the last training batch, for evaluation (eval_cached); kept in
        # the state dict so the best checkpoint scores as it did when it was validated.
        add_last_batch_cache(self, n_users, n_items, d)

    @classmethod
    def build(cls, params: SLMRecConfig, data, graph, device) -> SLMRec:
        image, text = feature_tensors(cls.name, data)
        model = cls(graph, image, text, data.n_users, **config_kwargs(params))
        return model.to(device)

    def branches(self) -> tuple[Tensor, Tensor]:
        """The three LightGCN outputs side by side: users (U, 3d) and items (I, 3d).

        Columns ``[0:d]`` are the ID branch, ``[d:2d]`` visual and ``[2d:3d]`` textual; the
        three propagations run as one over the concatenated inputs.
        """
        e_u = self.user_emb
        items = torch.cat([self.item_emb, self.image_dense(self.image_feat),
                           self.text_dense(self.text_feat)], dim=1)  # (I, 3d)
        out = self.prop({USER: torch.cat([e_u, e_u, e_u], dim=1), ITEM: items},
                        self.n_layers, "mean")
        return out[USER], out[ITEM]

    def _fused(self) -> tuple[Tensor, Tensor, Tensor]:
        g_u, g_i = self.branches()
        return self.user_fuse(g_u), self.item_fuse(g_i), g_i

    def embeddings(self) -> tuple[Tensor, Tensor]:
        if self.eval_cached and bool(self.has_cache):
            return self.cached_users, self.cached_items
        users, items, _ = self._fused()
        return users, items

    def fac_loss(self, g_i: Tensor) -> Tensor:
        """FAC on the batch items' pre-fusion branch vectors ``g_i`` (B, 3d): L_v + L_t."""
        d = self.d
        x = self.head_iv(g_i[:, :d])
        y = self.head_v(g_i[:, d:2 * d])
        z = self.head_t(g_i[:, 2 * d:])
        x_t = self.head_ivat(self.head_iva(x))
        return (info_nce(x, y, self.ssl_temp, cosine=False)
                + info_nce(x_t, z, self.ssl_temp, cosine=False))

    def configure_optimizer(self, lr: float) -> torch.optim.Optimizer:
        return fused_optimizer(torch.optim.Adam, self.parameters(), lr=lr,
                               weight_decay=self.weight_decay)

    def loss(self, batch: Batch) -> LossOut:
        users, items, g_i = self._fused()
        if self.training:
            store_last_batch(self, users, items)
        main = info_nce(users[batch.users], items[batch.pos], self.temp)  # sampled negs unused
        ssl = self.ssl_alpha * self.fac_loss(g_i[batch.pos])
        return LossOut(main + ssl, {"main": main.detach(), "ssl": ssl.detach()})
