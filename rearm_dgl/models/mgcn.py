"""MGCN: multi-view graph convolution with purified modality features (Yu et al., MM 2023).

Paper: "Multi-View Graph Convolutional Network for Multimedia Recommendation",
https://arxiv.org/abs/2308.03588. With ID embeddings ``E_u``, ``E_i`` and, per modality m,
the projected (trainable) feature table ``P_m = Proj_m(X_m)``:

    E^_m = E_i * sigmoid(Gate_m(P_m))                    (behaviour-guided purifier)
    C = mean_{l=0..L} A^l [E_u; E_i]                      (user-item view, A sym-normalised)
    I_m = S_m^{n_layers} E^_m,  U_m = R^ I_m,  M_m = [U_m; I_m]   (item-item view)
    alpha = softmax_m(q(M_m)),  q = Linear -> tanh -> Linear(no bias), shared by modalities
    common = sum_m alpha_m M_m,  spec_m = sigmoid(Pref_m(C)) * (M_m - common)
    side = (spec_v + spec_t + common) / 3,   final = C + side,  s(u, i) = user . item

``S_m`` is the item kNN graph of the raw features with cosine values, normalised by
``S_ij / sqrt(r_i r_j)`` with r its row sums, and ``R^`` the user-item block of the
sym-normalised interaction matrix (a normalised sum over the user's items). The loss is BPR,
plus ``reg_weight (|u_b|^2 + |p_b|^2 + |n_b|^2) / (2 B)`` on the final embeddings, plus
``cl_loss`` times two in-batch InfoNCE terms (cosine / ``cl_tau``) pulling each batch
item's and user's side embedding towards its content embedding C. As in the reference code,
the raw feature tables are trainable and the learning rate decays by 0.96 every 50 epochs;
the paper mentions neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from rearm_dgl.graphs.derived import item_knn_graph
from rearm_dgl.graphs.propagate import Propagation
from rearm_dgl.graphs.schema import (
    INTERACTED_BY,
    INTERACTS,
    ITEM,
    ITEM_SEMANTIC_IMAGE,
    ITEM_SEMANTIC_TEXT,
    USER,
)
from rearm_dgl.models import registry
from rearm_dgl.models.base import (
    Batch,
    LossOut,
    ModelConfig,
    Recommender,
    add_modality_inputs,
    bpr_loss,
    check_fields,
    config_kwargs,
    feature_tensors,
    half_sq_norm_loss,
    info_nce,
    step_decay,
    xavier_parameter,
)


@dataclass(frozen=True)
class MGCNConfig(ModelConfig):
    """MGCN hyperparameters (MMRec's ``MGCN.yaml``). The item kNN k is ``graph.item_knn_k``.

    Attributes:
        embedding_size: d, the width of the ID embeddings and every view.
        n_ui_layers: LightGCN layers over the user-item graph.
        n_layers: Layers over each item-item graph.
        reg_weight: Weight of the L2 penalty on the batch's final embeddings.
        cl_loss: Weight of the side/content InfoNCE terms.
        cl_tau: InfoNCE temperature (0.2, hard-coded in the reference).
        train_features: Let Adam update the raw feature tables (the reference does).
        lr_decay: s of the learning-rate schedule ``lr * s^((epoch - 1) / lr_decay_epochs)``.
        lr_decay_epochs: T of that schedule.
    """

    embedding_size: int = 64
    n_ui_layers: int = 2
    n_layers: int = 1
    reg_weight: float = 1e-4
    cl_loss: float = 0.01
    cl_tau: float = 0.2
    train_features: bool = True
    lr_decay: float = 0.96
    lr_decay_epochs: int = 50

    def __post_init__(self):
        check_fields(self, "mgcn", {
            "embedding_size": ">= 1", "n_ui_layers": ">= 0", "n_layers": ">= 0",
            "reg_weight": ">= 0", "cl_loss": ">= 0", "cl_tau": "> 0", "lr_decay": "(0, 1]",
            "lr_decay_epochs": ">= 1"})


@registry.register
class MGCN(Recommender):
    """MGCN: purified modality views on item kNN graphs, fused with a LightGCN content view.

    Args:
        graph: The relation heterograph; its interaction relations (symmetric weights) and
            item semantic kNN relations (cosines) are read.
        image_feat: (I, F_v) float32 image features.
        text_feat: (I, F_t) float32 text features.
        n_users: Number of users U.
        embedding_size: d (default 64).
        n_ui_layers: User-item layers (default 2).
        n_layers: Item-item layers (default 1).
        reg_weight: L2 weight on the final batch embeddings (default 1e-4).
        cl_loss: InfoNCE weight (default 0.01).
        cl_tau: InfoNCE temperature (default 0.2).
        train_features: Trainable feature tables (default True).
        lr_decay: Learning-rate decay factor per ``lr_decay_epochs`` (default 0.96).
        lr_decay_epochs: Epochs per decay factor (default 50).
    """

    name: ClassVar[str] = "mgcn"
    config_cls: ClassVar[type[ModelConfig]] = MGCNConfig
    needs_features: ClassVar[bool] = True
    loss_parts: ClassVar[tuple[str, ...]] = ("bpr", "reg", "cl")

    def __init__(self, graph, image_feat: Tensor, text_feat: Tensor, n_users: int,
                 embedding_size: int = 64, n_ui_layers: int = 2, n_layers: int = 1,
                 reg_weight: float = 1e-4, cl_loss: float = 0.01, cl_tau: float = 0.2,
                 train_features: bool = True, lr_decay: float = 0.96, lr_decay_epochs: int = 50):
        super().__init__()
        n_items, d = image_feat.shape[0], embedding_size
        self.n_users, self.n_items = n_users, n_items
        self.n_ui_layers, self.n_layers = n_ui_layers, n_layers
        self.reg_weight, self.cl_loss, self.cl_tau = reg_weight, cl_loss, cl_tau
        self.lr_decay, self.lr_decay_epochs = lr_decay, lr_decay_epochs

        self.user_emb, self.item_emb = xavier_parameter(n_users, d), xavier_parameter(n_items, d)
        add_modality_inputs(self, image_feat, text_feat, train_features, d)
        self.image_gate, self.text_gate = nn.Linear(d, d), nn.Linear(d, d)
        self.query = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
        self.image_pref, self.text_pref = nn.Linear(d, d), nn.Linear(d, d)

        self.ui_prop = Propagation(graph, [(INTERACTS, 1.0), (INTERACTED_BY, 1.0)])
        self.to_users = Propagation(graph, [(INTERACTED_BY, 1.0)])  # R^: items -> users
        items = item_knn_graph(graph, (ITEM_SEMANTIC_IMAGE, ITEM_SEMANTIC_TEXT), "cosine")
        self.image_prop = Propagation(items, [(ITEM_SEMANTIC_IMAGE, 1.0)])
        self.text_prop = Propagation(items, [(ITEM_SEMANTIC_TEXT, 1.0)])

    @classmethod
    def build(cls, params: MGCNConfig, data, graph, device) -> MGCN:
        image, text = feature_tensors(cls.name, data)
        model = cls(graph, image, text, data.n_users, **config_kwargs(params))
        return model.to(device)

    def lr_scale(self, epoch: int) -> float:
        return step_decay(self.lr_decay, self.lr_decay_epochs, epoch)

    def purified(self) -> tuple[Tensor, Tensor]:
        """The gated item ID embeddings E^_v, E^_t (I, d) each."""
        return tuple(self.item_emb * torch.sigmoid(gate(proj(table)))
                     for table, proj, gate in (
                         (self.image_table, self.image_proj, self.image_gate),
                         (self.text_table, self.text_proj, self.text_gate)))

    def views(self) -> tuple[Tensor, Tensor]:
        """Content C and side representations, each (U + I, d), users first."""
        out = self.ui_prop({USER: self.user_emb, ITEM: self.item_emb}, self.n_ui_layers, "mean")
        content = torch.cat([out[USER], out[ITEM]])
        no_users = self.user_emb.new_zeros(self.user_emb.shape)
        views = []
        for e_hat, prop in zip(self.purified(), (self.image_prop, self.text_prop)):
            i_m = prop({ITEM: e_hat}, self.n_layers, "last")[ITEM]  # (I, d)
            u_m = self.to_users({USER: no_users, ITEM: i_m}, 1, "last")[USER]  # (U, d)
            views.append(torch.cat([u_m, i_m]))
        alpha = torch.softmax(torch.cat([self.query(v) for v in views], dim=1), dim=1)  # (N, 2)
        common = alpha[:, :1] * views[0] + alpha[:, 1:] * views[1]
        spec = [torch.sigmoid(pref(content)) * (v - common)
                for v, pref in zip(views, (self.image_pref, self.text_pref))]
        return content, (spec[0] + spec[1] + common) / 3.0

    def embeddings(self) -> tuple[Tensor, Tensor]:
        content, side = self.views()
        final = content + side
        return final[: self.n_users], final[self.n_users:]

    def loss(self, batch: Batch) -> LossOut:
        content, side = self.views()
        final = content + side
        users, items = final[: self.n_users], final[self.n_users:]
        u, p, n = users[batch.users], items[batch.pos], items[batch.neg]  # (B, d) each
        bpr = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        reg = self.reg_weight * half_sq_norm_loss(u, p, n)
        pos = self.n_users + batch.pos
        cl = self.cl_loss * (info_nce(side[pos], content[pos], self.cl_tau)
                             + info_nce(side[batch.users], content[batch.users], self.cl_tau))
        return LossOut(bpr + reg + cl, {"bpr": bpr.detach(), "reg": reg.detach(),
                                        "cl": cl.detach()})
