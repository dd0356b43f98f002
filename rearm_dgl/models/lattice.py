"""LATTICE: mining latent item-item structure (Zhang et al., ACM MM 2021).

Paper: "Mining Latent Structures for Multimedia Recommendation",
https://arxiv.org/abs/2104.09036. Each modality m projects its (trainable) feature table,
``P_m = Proj_m(X_m)`` (I, d_f), and builds a top-k cosine item graph from it; the learned
graphs are mixed with fixed kNN graphs of the raw features and convolve the item ID
embeddings:

    w = softmax(omega)                                          (learned modality weights)
    L_m = kNN_k(cos(P_m))                   (cosines kept, self included, row i keeps j)
    S_learn = N(w_v L_v + w_t L_t),  S_orig = w_v N(kNN_k(cos X_v)) + w_t N(kNN_k(cos X_t))
    S = (1 - lambda) S_learn + lambda S_orig,   N(M)_ij = M_ij / sqrt(r_i r_j), r = row sums
    h = S^{n_layers} E_i
    [e_u; e_i] = mean_{l=0..L} A^l [E_u; E_i],   A = (D + I)^-1 (A_ui + I)
    user = e_u,  item = e_i + h / |h|,  s(u, i) = user . item

The loss is BPR plus ``reg_weight (|u_b|^2 + |p_b|^2 + |n_b|^2) / (2 B)`` on the final
embeddings. As in the reference code, S is rebuilt with gradients at the first batch of
every epoch and reused detached by the other batches (so the projections, the feature tables
and omega learn once per epoch; later batches leave them alone, as PyTorch >= 2 Adam skips
parameters without gradients), and rebuilt without gradients for every evaluation. The
learned graph is computed in row blocks with top-k (:func:`knn_graph_differentiable`), never
as a dense I x I matrix. The reference code, unlike the paper, normalises the user-item graph
as a random walk with self-loops, keeps the feature tables trainable, and decays the learning
rate by 0.96 every 50 epochs; all three are followed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rearm_dgl.graphs.derived import knn_values, rowsum_sym_norm, rw_self_loop_graph
from rearm_dgl.graphs.knn import knn_graph_differentiable
from rearm_dgl.graphs.propagate import Propagation, SparseOperator
from rearm_dgl.graphs.schema import (
    INTERACTED_BY,
    INTERACTS,
    ITEM,
    ITEM_SELF,
    ITEM_SEMANTIC_IMAGE,
    ITEM_SEMANTIC_TEXT,
    USER,
    USER_SELF,
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
    step_decay,
    xavier_parameter,
)

Entries = tuple[Tensor, Tensor, Tensor]  # rows, cols, values of a sparse (I, I) matrix


@dataclass(frozen=True)
class LATTICEConfig(ModelConfig):
    """LATTICE hyperparameters (MMRec's ``LATTICE.yaml``). k is ``graph.item_knn_k``.

    Attributes:
        embedding_size: d, the width of the ID embeddings.
        feat_embed_dim: Width of the projected features the learned graph compares.
        n_ui_layers: LightGCN layers over the user-item graph (``len(weight_size)``).
        n_layers: Layers over the item-item graph.
        lambda_coeff: lambda, the share of the fixed raw-feature graph in S.
        reg_weight: Weight of the L2 penalty on the batch's final embeddings.
        train_features: Let Adam update the raw feature tables (the reference does).
        lr_decay: s of the learning-rate schedule ``lr * s^((epoch - 1) / lr_decay_epochs)``.
        lr_decay_epochs: T of that schedule.
    """

    embedding_size: int = 64
    feat_embed_dim: int = 64
    n_ui_layers: int = 2
    n_layers: int = 1
    lambda_coeff: float = 0.9
    reg_weight: float = 1e-4
    train_features: bool = True
    lr_decay: float = 0.96
    lr_decay_epochs: int = 50

    def __post_init__(self):
        check_fields(self, "lattice", {
            "embedding_size": ">= 1", "feat_embed_dim": ">= 1", "n_ui_layers": ">= 0",
            "n_layers": ">= 0", "lambda_coeff": "[0, 1]", "reg_weight": ">= 0",
            "lr_decay": "(0, 1]", "lr_decay_epochs": ">= 1"})


def spmm(entries: Entries, x: Tensor) -> Tensor:
    """``M @ x`` for the sparse (n, n) matrix given as entries, differentiable in both."""
    rows, cols, values = entries
    return x.new_zeros(x.shape).index_add(0, rows, values[:, None] * x[cols])  # (n, d)


@registry.register
class LATTICE(Recommender):
    """LATTICE: learned item-item graphs from projected features, mixed with fixed kNN graphs.

    Args:
        graph: The relation heterograph; its item semantic kNN relations give the fixed
            graphs (and k), the training pairs give the user-item graph.
        train_pairs: (2, N) long tensor of the training (user, item) pairs.
        image_feat: (I, F_v) float32 image features.
        text_feat: (I, F_t) float32 text features.
        n_users: Number of users U.
        embedding_size: d (default 64).
        feat_embed_dim: Projected feature width (default 64).
        n_ui_layers: User-item layers (default 2).
        n_layers: Item-item layers (default 1).
        lambda_coeff: Share of the fixed graph (default 0.9).
        reg_weight: L2 weight on the final batch embeddings (default 1e-4).
        train_features: Trainable feature tables (default True).
        lr_decay: Learning-rate decay factor per ``lr_decay_epochs`` (default 0.96).
        lr_decay_epochs: Epochs per decay factor (default 50).
    """

    name: ClassVar[str] = "lattice"
    config_cls: ClassVar[type[ModelConfig]] = LATTICEConfig
    needs_features: ClassVar[bool] = True
    loss_parts: ClassVar[tuple[str, ...]] = ("bpr", "reg")

    def __init__(self, graph, train_pairs: Tensor, image_feat: Tensor, text_feat: Tensor,
                 n_users: int, embedding_size: int = 64, feat_embed_dim: int = 64,
                 n_ui_layers: int = 2, n_layers: int = 1, lambda_coeff: float = 0.9,
                 reg_weight: float = 1e-4, train_features: bool = True, lr_decay: float = 0.96,
                 lr_decay_epochs: int = 50):
        super().__init__()
        n_items = image_feat.shape[0]
        self.n_users, self.n_items = n_users, n_items
        self.n_ui_layers, self.n_layers = n_ui_layers, n_layers
        self.lambda_coeff, self.reg_weight = lambda_coeff, reg_weight
        self.lr_decay, self.lr_decay_epochs = lr_decay, lr_decay_epochs
        self.k = max(1, graph.num_edges(ITEM_SEMANTIC_IMAGE) // max(n_items, 1))

        self.user_emb, self.item_emb = xavier_parameter(n_users, embedding_size), xavier_parameter(n_items, embedding_size)
        add_modality_inputs(self, image_feat, text_feat, train_features, feat_embed_dim)
        self.modal_weight = nn.Parameter(torch.tensor([0.5, 0.5]))  # omega: image, text

        # The fixed graphs N(kNN(cos X_m)), from the heterograph's kNN neighbours.
        # Buffers, not saved: they are rebuilt from the heterograph and follow .to(device).
        for m, et in (("image", ITEM_SEMANTIC_IMAGE), ("text", ITEM_SEMANTIC_TEXT)):
            for part, t in zip(("rows", "cols", "values"), knn_values(graph, et, "cosine")):
                self.register_buffer(f"_orig_{m}_{part}", t, persistent=False)
        pairs = train_pairs.cpu().long()
        self.ui_prop = Propagation(rw_self_loop_graph(pairs[0], pairs[1], n_users, n_items),
                                   [(INTERACTS, 1.0), (INTERACTED_BY, 1.0), (USER_SELF, 1.0),
                                    (ITEM_SELF, 1.0)])
        self._rebuild = True  # the next training batch rebuilds S with gradients
        self._item_graph: SparseOperator | None = None  # S, detached, between rebuilds

    @classmethod
    def build(cls, params: LATTICEConfig, data, graph, device) -> LATTICE:
        image, text = feature_tensors(cls.name, data)
        model = cls(graph, torch.from_numpy(data.train), image, text, data.n_users,
                    **config_kwargs(params))
        return model.to(device)

    def start_epoch(self, epoch: int) -> None:
        self._rebuild = True

    def lr_scale(self, epoch: int) -> float:
        return step_decay(self.lr_decay, self.lr_decay_epochs, epoch)

    def item_graph(self) -> Entries:
        """The entries of S from the current parameters (differentiable unless no_grad)."""
        w = torch.softmax(self.modal_weight, dim=0)  # (2,)
        rows, cols, vals = [], [], []
        for m, (table, proj) in enumerate(((self.image_table, self.image_proj),
                                           (self.text_table, self.text_proj))):
            r, c, v = knn_graph_differentiable(proj(table), self.k)
            rows.append(r)
            cols.append(c)
            vals.append(w[m] * v)
        rows_l, cols_l = torch.cat(rows), torch.cat(cols)
        learned = rowsum_sym_norm(rows_l, cols_l, torch.cat(vals), self.n_items)
        rows, cols, vals = [rows_l], [cols_l], [(1.0 - self.lambda_coeff) * learned]
        for m, name in enumerate(("image", "text")):
            rows.append(getattr(self, f"_orig_{name}_rows"))
            cols.append(getattr(self, f"_orig_{name}_cols"))
            vals.append(self.lambda_coeff * w[m] * getattr(self, f"_orig_{name}_values"))
        return torch.cat(rows), torch.cat(cols), torch.cat(vals)

    def _item_conv(self) -> Tensor:
        """h = S^{n_layers} E_i (I, d), rebuilding S where the reference does."""
        if self.training and not self._rebuild and self._item_graph is not None:
            h = self.item_emb
            for _ in range(self.n_layers):
                h = self._item_graph(h)
            return h
        entries = self.item_graph()
        if self.training:  # a rebuild batch: gradients reach the graph learner through S
            self._item_graph = SparseOperator(entries[0], entries[1], entries[2].detach(),
                                              (self.n_items, self.n_items))
            self._rebuild = False
        h = self.item_emb
        for _ in range(self.n_layers):
            h = spmm(entries, h)
        return h

    def forward_all(self) -> tuple[Tensor, Tensor]:
        """Final user (U, d) and item (I, d) representations."""
        h = self._item_conv()
        out = self.ui_prop({USER: self.user_emb, ITEM: self.item_emb}, self.n_ui_layers, "mean")
        return out[USER], out[ITEM] + F.normalize(h, dim=1)

    def embeddings(self) -> tuple[Tensor, Tensor]:
        return self.forward_all()

    def loss(self, batch: Batch) -> LossOut:
        users, items = self.forward_all()
        u, p, n = users[batch.users], items[batch.pos], items[batch.neg]  # (B, d) each
        bpr = bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        reg = self.reg_weight * half_sq_norm_loss(u, p, n)
        return LossOut(bpr + reg, {"bpr": bpr.detach(), "reg": reg.detach()})
