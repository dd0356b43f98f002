"""LGMRec: local and global graph learning (Guo et al., AAAI 2024).

Paper: "LGMRec: Local and Global Graph Learning for Multimodal Recommendation",
https://arxiv.org/abs/2312.16400. With A the sym-normalised user-item graph, R the raw
(U, I) interaction matrix, frozen features X_m and, per modality m in {v, t}:

    local:   C = mean_{l=0..L_ui} A^l [E_u; E_i]                      (collaborative)
             F_m,i = X_m W_m,  F_m,u = diag(1 / deg_u) R F_m,i        (user = mean of its items)
             G_m = A^{L_mm} [F_m,u; F_m,i]                            (last layer only)
             Local = C + rownorm(G_v) + rownorm(G_t)
    global:  H_m,i = GumbelSoftmax_tau(X_m Q_m),  H_m,u = GumbelSoftmax_tau(R X_m Q_m)   (I|U, H)
             X^0 = C_i;  per hyper layer: Y = drop(H_m,i)^T X, X = drop(H_m,i) Y, Z_m = drop(H_m,u) Y
             Global = [Z_v; X_v] + [Z_t; X_t]
    final:   Local + alpha rownorm(Global),  s(u, i) = u . i

The user hyperedge logits are a *sum* over the user's items, tau = 0.2, and the dropped
assignment matrices (dropout 1 - keep_rate, training only) are drawn once per forward pass
and reused by every hyper layer. The loss is BPR on the final embeddings, plus ``cl_weight``
times a cross-modal hypergraph contrastive loss (visual anchor, all textual users or items
as candidates, cosine / 0.2, summed over the batch), plus ``reg_weight`` times the MMRec
embedding penalty on the batch's final vectors. As in the reference code, the Gumbel noise is
also drawn when evaluating (``eval_gumbel: sample``), here from a generator seeded by a seed
saved with the weights, so one checkpoint always scores the same; ``none`` scores with the
plain softmax at tau instead (a deviation from the reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
    bpr_loss,
    check_fields,
    emb_norm_loss,
    feature_tensors,
    info_nce,
    xavier_parameter,
)

TAU = 0.2  # Gumbel-softmax and contrastive temperature, fixed in the reference code
_EPS = 1e-7  # added to the user degree before the mean, so users without items get zeros


@dataclass(frozen=True)
class LGMRecConfig(ModelConfig):
    """LGMRec hyperparameters (MMRec's ``LGMRec.yaml``, Baby's values by default).

    Attributes:
        embedding_size: d, the width of the ID embeddings and projected features.
        n_ui_layers: LightGCN layers of the collaborative branch.
        n_mm_layers: Propagation layers of the modality branch (last layer kept).
        n_hyper_layer: Hypergraph layers.
        hyper_num: H, hyperedges per modality.
        keep_rate: Share of hyperedge assignments kept by the training dropout.
        alpha: Weight of the global (hypergraph) embedding.
        cl_weight: Weight of the hypergraph contrastive loss.
        reg_weight: Weight of the embedding penalty.
        eval_gumbel: ``sample`` (the reference: Gumbel noise when evaluating too) or
            ``none`` (plain softmax at tau when evaluating).
    """

    embedding_size: int = 64
    n_ui_layers: int = 2
    n_mm_layers: int = 2
    n_hyper_layer: int = 1
    hyper_num: int = 4
    keep_rate: float = 0.5
    alpha: float = 0.3
    cl_weight: float = 1e-4
    reg_weight: float = 1e-6
    eval_gumbel: Literal["sample", "none"] = "sample"

    def __post_init__(self):
        check_fields(self, "lgmrec", {
            "embedding_size": ">= 1", "n_ui_layers": ">= 0", "n_mm_layers": ">= 0",
            "n_hyper_layer": ">= 1", "hyper_num": ">= 1", "keep_rate": "(0, 1]",
            "alpha": ">= 0", "cl_weight": ">= 0", "reg_weight": ">= 0"})
        check(self.eval_gumbel in ("sample", "none"), "lgmrec.eval_gumbel",
               f"must be 'sample' or 'none', got {self.eval_gumbel!r}")


def hypergraph_propagate(item_hyper: Tensor, user_hyper: Tensor, x: Tensor, layers: int
                         ) -> tuple[Tensor, Tensor]:
    """Item -> hyperedge -> item/user passes: ``(Z_u (U, d), X_i (I, d))``.

    Args:
        item_hyper: (I, H) item-hyperedge assignments.
        user_hyper: (U, H) user-hyperedge assignments.
        x: (I, d) item embeddings entering the first layer.
        layers: Number of hyper layers (>= 1); the user output comes from the last.
    """
    z_u = None
    for _ in range(layers):
        y = item_hyper.T @ x  # (H, d)
        x = item_hyper @ y  # (I, d)
        z_u = user_hyper @ y  # (U, d)
    return z_u, x


def _sparse_interactions(train: np.ndarray, n_users: int, n_items: int) -> Tensor:
    """The binary (U, I) training matrix R as a coalesced sparse tensor."""
    users, items = torch.from_numpy(train[0]).long(), torch.from_numpy(train[1]).long()
    values = torch.ones(users.shape[0])
    return torch.sparse_coo_tensor(torch.stack([users, items]), values, (n_users, n_items),
                                   check_invariants=False).coalesce()


@registry.register
class LGMRec(Recommender):
    """LGMRec over the interaction relations of the heterograph and the raw interactions.

    Args:
        graph: The relation heterograph; only ``INTERACTS`` / ``INTERACTED_BY`` are read, with
            their stored weights ``1 / sqrt((deg(u) + 1e-7) (deg(i) + 1e-7))``.
        train_pairs: (2, N) int array of the training (user, item) pairs (for R).
        image_feat: (I, F_v) float32 image features (frozen).
        text_feat: (I, F_t) float32 text features (frozen).
        n_users: Number of users U.
        params: The :class:`LGMRecConfig`.
    """

    name: ClassVar[str] = "lgmrec"
    config_cls: ClassVar[type[ModelConfig]] = LGMRecConfig
    needs_features: ClassVar[bool] = True
    loss_parts: ClassVar[tuple[str, ...]] = ("bpr", "hcl", "reg")

    def __init__(self, graph, train_pairs: np.ndarray, image_feat: Tensor, text_feat: Tensor,
                 n_users: int, params: LGMRecConfig | None = None):
        super().__init__()
        p = params or LGMRecConfig()
        self.p = p
        n_items, d = image_feat.shape[0], p.embedding_size
        self.n_users = n_users
        self.prop = Propagation(graph, [(INTERACTS, 1.0), (INTERACTED_BY, 1.0)])
        r = _sparse_interactions(train_pairs, n_users, n_items)
        self.register_buffer("interactions", r, persistent=False)
        degree = torch.zeros(n_users).index_add_(0, r.indices()[0], r.values())
        self.register_buffer("inv_user_degree", (1.0 / (degree + _EPS))[:, None],
                             persistent=False)  # (U, 1)
        add_feature_table(self, "image_feat", image_feat, trainable=False)  # (I, F_v)
        add_feature_table(self, "text_feat", text_feat, trainable=False)  # (I, F_t)
        xavier = xavier_parameter
        self.user_emb, self.item_emb = xavier(n_users, d), xavier(n_items, d)
        self.image_trs, self.text_trs = xavier(image_feat.shape[1], d), xavier(text_feat.shape[1], d)
        self.image_hyper = xavier(image_feat.shape[1], p.hyper_num)
        self.text_hyper = xavier(text_feat.shape[1], p.hyper_num)
        self.hyper_drop = nn.Dropout(1.0 - p.keep_rate)
        # Seed of the evaluation-time Gumbel noise, drawn from the (trainer-seeded) global
        # generator and saved with the weights, so re-scoring a checkpoint reproduces it.
        self.register_buffer("eval_noise_seed", torch.randint(0, 2**31 - 1, ()))

    @classmethod
    def build(cls, params: LGMRecConfig, data, graph, device) -> LGMRec:
        image, text = feature_tensors(cls.name, data)
        model = cls(graph, data.train, image, text, data.n_users, params)
        return model.to(device)

    def _assign(self, logits: Tensor, generator: torch.Generator | None) -> Tensor:
        """Row-wise soft hyperedge assignments of (n, H) logits: softmax((logits + g) / tau).

        ``g`` is Gumbel(0, 1) noise drawn from ``generator`` (the global one on the logits'
        device when None), or zero when evaluating with ``eval_gumbel: none``. A given
        generator is a CPU one and the noise moves to the logits' device, so a checkpoint
        scores the same on every device.
        """
        if not self.training and self.p.eval_gumbel == "none":
            return torch.softmax(logits / TAU, dim=1)
        if generator is None:
            noise = torch.empty_like(logits).exponential_()
        else:
            noise = torch.empty(logits.shape, dtype=logits.dtype).exponential_(
                generator=generator).to(logits.device, non_blocking=True)
        return torch.softmax((logits - noise.log()) / TAU, dim=1)

    def _eval_generator(self) -> torch.Generator | None:
        """In evaluation, a CPU generator seeded from the weights' own seed: the noise is
        drawn as in the reference, but one checkpoint always scores the same, on any device."""
        if self.training:
            return None
        return torch.Generator().manual_seed(int(self.eval_noise_seed))

    def forward(self) -> tuple[Tensor, Tensor, dict[str, tuple[Tensor, Tensor]]]:
        """Final users (U, d), items (I, d), and per modality the hyper outputs (Z_u, X_i)."""
        p = self.p
        d, h = p.embedding_size, p.hyper_num
        c = self.prop({USER: self.user_emb, ITEM: self.item_emb}, p.n_ui_layers, "mean")
        # One product per feature matrix gives its projection (d columns) and its hyperedge
        # logits (H columns); one sparse product sums both over each user's items.
        image = self.image_feat @ torch.cat([self.image_trs, self.image_hyper], 1)  # (I, d+H)
        text = self.text_feat @ torch.cat([self.text_trs, self.text_hyper], 1)  # (I, d+H)
        items = torch.cat([image[:, :d], text[:, :d], image[:, d:], text[:, d:]], 1)
        users = torch.sparse.mm(self.interactions, items)  # (U, 2d+2H), sums over R
        f_i, f_u = items[:, :2 * d], users[:, :2 * d] * self.inv_user_degree  # means for users
        # Both modality branches propagate as one (U+I, 2d) input: columns [0:d] visual.
        g = self.prop({USER: f_u, ITEM: f_i}, p.n_mm_layers, "last")
        local_u = c[USER] + sum(F.normalize(t, dim=1) for t in g[USER].split(d, dim=1))
        local_i = c[ITEM] + sum(F.normalize(t, dim=1) for t in g[ITEM].split(d, dim=1))

        hyper: dict[str, tuple[Tensor, Tensor]] = {}
        gen = self._eval_generator()
        for k, m in enumerate(("v", "t")):
            cols = slice(2 * d + k * h, 2 * d + (k + 1) * h)
            a_i = self.hyper_drop(self._assign(items[:, cols], gen))  # (I, H)
            a_u = self.hyper_drop(self._assign(users[:, cols], gen))  # (U, H), summed logits
            hyper[m] = hypergraph_propagate(a_i, a_u, c[ITEM], p.n_hyper_layer)
        global_u = hyper["v"][0] + hyper["t"][0]
        global_i = hyper["v"][1] + hyper["t"][1]
        users = local_u + p.alpha * F.normalize(global_u, dim=1)
        items = local_i + p.alpha * F.normalize(global_i, dim=1)
        return users, items, hyper

    def embeddings(self) -> tuple[Tensor, Tensor]:
        users, items, _ = self.forward()
        return users, items

    def hcl_loss(self, hyper: dict[str, tuple[Tensor, Tensor]], batch: Batch) -> Tensor:
        """Visual anchors against every textual user / item, summed over the batch."""
        (zv_u, zv_i), (zt_u, zt_i) = hyper["v"], hyper["t"]
        return (info_nce(zv_u[batch.users], zt_u, TAU, batch.users, reduction="sum")
                + info_nce(zv_i[batch.pos], zt_i, TAU, batch.pos, reduction="sum"))

    def loss(self, batch: Batch) -> LossOut:
        users, items, hyper = self.forward()
        u, pos, neg = users[batch.users], items[batch.pos], items[batch.neg]  # (B, d)
        bpr = bpr_loss((u * pos).sum(-1), (u * neg).sum(-1))
        hcl = self.p.cl_weight * self.hcl_loss(hyper, batch)
        reg = self.p.reg_weight * emb_norm_loss(u, pos, neg)
        return LossOut(bpr + hcl + reg, {"bpr": bpr.detach(), "hcl": hcl.detach(),
                                         "reg": reg.detach()})
