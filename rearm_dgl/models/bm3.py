"""BM3: bootstrapped latent representations (Zhou et al., WWW 2023).

Paper: "Bootstrap Latent Representations for Multi-modal Recommendation",
https://arxiv.org/abs/2207.05969. No negative sampling and no auxiliary graph: online views
pass through one shared predictor ``g`` (Linear d -> d) and are pulled towards dropout
"target" views that receive no gradient.

    [H_u; H'_i] = mean_{l=0..L} A^l [E_u; E_i],   H_i = H'_i + E_i      (A: sym-normalised)
    T = Proj_t(X_t),  V = Proj_v(X_v)                                   (I, d)
    targets, no gradient: Hb_u, Hb_i, Tb, Vb = Drop_p(H_u), Drop_p(H_i), Drop_p(T), Drop_p(V)
    L_ui = 1 - mean_b cos(g(H_u)[u_b], Hb_i[i_b]),  L_iu = 1 - mean_b cos(g(H_i)[i_b], Hb_u[u_b])
    L_t  = 1 - mean_b cos(g(T)[i_b], Hb_i[i_b]),    L_tt = 1 - mean_b cos(g(T)[i_b], Tb[i_b])
    (L_v, L_vv likewise)
    total = L_ui + L_iu + reg_weight (|H_u|_F + |H_i|_F) / I + cl_weight (L_t + L_v + L_tt + L_vv)

Drop is inverted dropout with a fresh mask every batch, active in training and evaluation
alike (it only runs inside the loss); as with the reference's mask over the full matrices, a
repeated id shares its mask (one mask row is drawn per distinct id of the batch). The score is ``g(H_u)[u] . g(H_i)[i]``: the features shape the ID embeddings only through
the alignment terms. As in the reference code, the raw feature tables are trainable and the
items' layer-0 embedding is added once more after the propagation (the paper's equations do
not show either). Batches carry a sampled negative, which BM3 ignores.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from rearm_dgl.graphs.propagate import Propagation
from rearm_dgl.graphs.schema import INTERACTED_BY, INTERACTS, ITEM, USER
from rearm_dgl.models import registry
from rearm_dgl.models.base import (
    Batch,
    LossOut,
    ModelConfig,
    Recommender,
    add_modality_inputs,
    check_fields,
    config_kwargs,
    emb_norm_loss,
    feature_tensors,
    xavier_linear,
    xavier_parameter,
)


@dataclass(frozen=True)
class BM3Config(ModelConfig):
    """BM3 hyperparameters (MMRec's ``BM3.yaml``).

    Attributes:
        embedding_size: d, the width of the ID embeddings, the projections and the predictor.
        n_layers: L, LightGCN layers over the user-item graph.
        dropout: p, the dropout rate of the target views.
        reg_weight: Weight of the full-matrix norm penalty ``(|H_u|_F + |H_i|_F) / I``.
        cl_weight: Weight of the four modality alignment terms.
        train_features: Let Adam update the raw feature tables (the reference does).
    """

    embedding_size: int = 64
    n_layers: int = 1
    dropout: float = 0.5
    reg_weight: float = 0.1
    cl_weight: float = 2.0
    train_features: bool = True

    def __post_init__(self):
        check_fields(self, "bm3", {"embedding_size": ">= 1", "n_layers": ">= 0",
                                   "dropout": "[0, 1)", "reg_weight": ">= 0",
                                   "cl_weight": ">= 0"})


def _agreement(online: Tensor, target: Tensor) -> Tensor:
    """``1 - mean_b cos(online_b, target_b)``; the target is a constant."""
    return 1.0 - F.cosine_similarity(online, target.detach(), dim=-1).mean()


@registry.register
class BM3(Recommender):
    """BM3 over the interaction relations of the heterograph.

    Args:
        graph: The relation heterograph; only ``INTERACTS`` / ``INTERACTED_BY`` are read, with
            their stored weights ``1 / sqrt((deg(u) + 1e-7) (deg(i) + 1e-7))``.
        image_feat: (I, F_v) float32 image features.
        text_feat: (I, F_t) float32 text features.
        n_users: Number of users U.
        embedding_size: d (default 64).
        n_layers: L (default 1).
        dropout: Target-view dropout rate p (default 0.5).
        reg_weight: Norm-penalty weight (default 0.1).
        cl_weight: Modality-alignment weight (default 2.0).
        train_features: Trainable raw feature tables (default True, as the reference).
    """

    name: ClassVar[str] = "bm3"
    config_cls: ClassVar[type[ModelConfig]] = BM3Config
    needs_features: ClassVar[bool] = True
    loss_parts: ClassVar[tuple[str, ...]] = ("ui", "reg", "cl")

    def __init__(self, graph, image_feat: Tensor, text_feat: Tensor, n_users: int,
                 embedding_size: int = 64, n_layers: int = 1, dropout: float = 0.5,
                 reg_weight: float = 0.1, cl_weight: float = 2.0, train_features: bool = True):
        super().__init__()
        n_items = image_feat.shape[0]
        self.n_layers, self.dropout = n_layers, dropout
        self.reg_weight, self.cl_weight = reg_weight, cl_weight
        self.prop = Propagation(graph, [(INTERACTS, 1.0), (INTERACTED_BY, 1.0)])
        self.user_emb, self.item_emb = xavier_parameter(n_users, embedding_size), xavier_parameter(n_items, embedding_size)
        add_modality_inputs(self, image_feat, text_feat, train_features, embedding_size,
                            partial(xavier_linear, normal=True))
        self.predictor = xavier_linear(embedding_size, embedding_size, normal=True)

    @classmethod
    def build(cls, params: BM3Config, data, graph, device) -> BM3:
        image, text = feature_tensors(cls.name, data)
        model = cls(graph, image, text, data.n_users, **config_kwargs(params))
        return model.to(device)

    def propagate(self) -> tuple[Tensor, Tensor]:
        """H_u (U, d) and H_i (I, d): the LightGCN layer mean, items plus their layer 0."""
        out = self.prop({USER: self.user_emb, ITEM: self.item_emb}, self.n_layers, "mean")
        return out[USER], out[ITEM] + self.item_emb

    def embeddings(self) -> tuple[Tensor, Tensor]:
        h_u, h_i = self.propagate()
        return self.predictor(h_u), self.predictor(h_i)

    def _mask(self, rows: int, like: Tensor) -> Tensor:
        """An inverted-dropout mask (rows, d): 0 with probability p, else 1 / (1 - p)."""
        keep = 1.0 - self.dropout
        shape = (rows, like.shape[1])
        return (torch.rand(shape, device=like.device) < keep).to(like.dtype) / keep

    def _target(self, rows: Tensor, ids: Tensor) -> Tensor:
        """Dropout target of the batch rows ``rows = X[ids]`` (B, d), without gradient.

        One mask row per distinct id, as a mask drawn over the full matrix and then gathered
        would give: a repeated id shares its mask, and only the batch's ids cost a draw.
        """
        unique, inverse = torch.unique(ids, return_inverse=True)
        return rows.detach() * self._mask(unique.shape[0], rows)[inverse]

    def loss(self, batch: Batch) -> LossOut:
        users, items = batch.users, batch.pos  # the sampled negatives are not used
        h_u, h_i = self.propagate()
        # Only the batch rows of the projections are needed: projecting them alone gives the
        # same values and the same (dense) feature-table gradients as projecting the tables.
        t = self.text_proj(self.text_table[items])  # (B, d)
        v = self.image_proj(self.image_table[items])  # (B, d)
        with torch.no_grad():
            hb_u, hb_i = self._target(h_u[users], users), self._target(h_i[items], items)
            tb, vb = self._target(t, items), self._target(v, items)

        g = self.predictor
        ui = _agreement(g(h_u[users]), hb_i) + _agreement(g(h_i[items]), hb_u)
        g_t, g_v = g(t), g(v)
        cl = (_agreement(g_t, hb_i) + _agreement(g_v, hb_i)
              + _agreement(g_t, tb) + _agreement(g_v, vb))
        reg = self.reg_weight * emb_norm_loss(h_u, h_i)  # full matrices, divided by I
        cl = self.cl_weight * cl
        return LossOut(ui + reg + cl, {"ui": ui.detach(), "reg": reg.detach(), "cl": cl.detach()})
