"""FREEDOM: freezing and denoising graph structures (Zhou & Shen, ACM MM 2023).

Paper: "A Tale of Two Graphs: Freezing and Denoising Graph Structures for Multimodal
Recommendation", https://arxiv.org/abs/2211.06924. Two graphs:

1. **A frozen item-item graph** built once from the features. For each modality m the kNN
   adjacency ``A_m`` keeps the top-k cosine neighbours of every item (the item itself
   included) as **ones**, normalised as ``D^-1/2 A_m D^-1/2`` with D the row sums (so every
   entry is 1/k). The two are mixed, ``S = w A_image + (1 - w) A_text`` with
   ``w = mm_image_weight``. The neighbour sets are those of the heterograph's
   ``ITEM_SEMANTIC_IMAGE`` / ``ITEM_SEMANTIC_TEXT`` relations (``graph.item_knn_k``
   neighbours); only the weights are recomputed, since the heterograph stores similarity / k.
2. **A denoised user-item graph.** Once per training epoch, degree-sensitive edge pruning
   keeps ``(1 - dropout) |E|`` interaction edges sampled without replacement with probability
   proportional to ``1 / sqrt(deg(u) deg(i))``, so edges between high-degree nodes are pruned
   more often, and the kept graph is re-normalised symmetrically.

The forward pass, with ID embeddings ``E_u``, ``E_i``:

    h_i = S^{L_mm} E_i                              (item-item graph, n_mm_layers)
    [e_u; e_i] = mean_{l=0..L_ui} A^l [E_u; E_i]    (pruned graph in training, full in eval)
    user = e_u,  item = e_i + h_i,  s(u, i) = user . item

The loss is BPR on these scores plus ``reg_weight`` times two more BPR terms that score the
users against projected image and text features ``W_v v_i`` and ``W_t t_i`` (the feature
tables are trainable, initialised with the raw features).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from rearm_dgl.config import check
from rearm_dgl.graphs.derived import interaction_graph, item_knn_graph
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
    fused_optimizer,
    xavier_parameter,
)

_EPS = 1e-7  # added to degrees before the inverse square root, so isolated nodes give 0


@dataclass(frozen=True)
class FREEDOMConfig(ModelConfig):
    """FREEDOM hyperparameters. The item kNN size k is ``graph.item_knn_k``.

    Attributes:
        embedding_size: d, the width of the ID embeddings.
        feat_embed_dim: Width of the projected image and text features (must equal d, since
            users are scored against them).
        n_mm_layers: Propagation layers over the frozen item-item graph.
        n_ui_layers: Propagation layers over the user-item graph.
        mm_image_weight: w, the image share of the item-item graph.
        dropout: Fraction of interaction edges pruned each epoch (0 disables pruning).
        reg_weight: Weight of the two feature BPR terms.
    """

    embedding_size: int = 64
    feat_embed_dim: int = 64
    n_mm_layers: int = 1
    n_ui_layers: int = 2
    mm_image_weight: float = 0.1
    dropout: float = 0.8
    reg_weight: float = 1e-4

    def __post_init__(self):
        check(self.embedding_size >= 1, "freedom.embedding_size", "must be >= 1")
        check(self.feat_embed_dim == self.embedding_size, "freedom.feat_embed_dim",
               "must equal freedom.embedding_size (users are scored against projected features)")
        check_fields(self, "freedom", {"n_mm_layers": ">= 0", "n_ui_layers": ">= 0",
                                       "mm_image_weight": "[0, 1]", "dropout": "[0, 1)",
                                       "reg_weight": ">= 0"})


def sym_norm_weights(rows: Tensor, cols: Tensor, n_rows: int, n_cols: int) -> Tensor:
    """``1 / sqrt(d_r[row] d_c[col])`` for the binary matrix with ones at (rows, cols).

    ``d_r`` are its row sums and ``d_c`` its column sums (each plus 1e-7).
    """
    ones = torch.ones(rows.shape[0], dtype=torch.float32)
    d_r = torch.zeros(n_rows).index_add_(0, rows, ones) + _EPS
    d_c = torch.zeros(n_cols).index_add_(0, cols, ones) + _EPS
    return d_r.pow(-0.5)[rows] * d_c.pow(-0.5)[cols]


@registry.register
class FREEDOM(Recommender):
    """FREEDOM: frozen item-item graph plus degree-sensitive pruning of the user-item graph.

    Args:
        graph: The relation heterograph; the interaction relations (for evaluation) and the
            item semantic kNN relations (neighbour sets only) are read.
        train_pairs: (2, N) long tensor of the training (user, item) pairs.
        image_feat: (I, F_v) float32 image features.
        text_feat: (I, F_t) float32 text features.
        n_users: Number of users U.
        embedding_size: d (default 64).
        n_mm_layers: Item-item layers (default 1).
        n_ui_layers: User-item layers (default 2).
        mm_image_weight: Image share w of the item-item graph (default 0.1).
        dropout: Share of interaction edges pruned per epoch (default 0.8).
        reg_weight: Weight of the feature BPR terms (default 1e-4).
        seed: Seed of the edge-pruning draws (epoch e uses ``seed + e``).
    """

    name: ClassVar[str] = "freedom"
    config_cls: ClassVar[type[ModelConfig]] = FREEDOMConfig
    needs_features: ClassVar[bool] = True
    loss_parts: ClassVar[tuple[str, ...]] = ("bpr", "feat")

    def __init__(self, graph, train_pairs: Tensor, image_feat: Tensor, text_feat: Tensor,
                 n_users: int, embedding_size: int = 64, n_mm_layers: int = 1,
                 n_ui_layers: int = 2, mm_image_weight: float = 0.1, dropout: float = 0.8,
                 reg_weight: float = 1e-4, seed: int = 0):
        super().__init__()
        n_items = image_feat.shape[0]
        self.n_users, self.n_items = n_users, n_items
        self.n_mm_layers, self.n_ui_layers = n_mm_layers, n_ui_layers
        self.dropout, self.reg_weight = dropout, reg_weight
        self.seed = int(seed)

        self.user_emb, self.item_emb = xavier_parameter(n_users, embedding_size), xavier_parameter(n_items, embedding_size)
        # Raw feature tables are trainable, initialised with the features (as the paper's
        # reference implementation does); the projections map them to d.
        add_modality_inputs(self, image_feat, text_feat, True, embedding_size)

        self.item_prop = Propagation(
            item_knn_graph(graph, (ITEM_SEMANTIC_IMAGE, ITEM_SEMANTIC_TEXT), "binary"),
            [(ITEM_SEMANTIC_IMAGE, mm_image_weight), (ITEM_SEMANTIC_TEXT, 1.0 - mm_image_weight)])
        self.full_prop = Propagation(graph, [(INTERACTS, 1.0), (INTERACTED_BY, 1.0)])

        pairs = train_pairs.cpu().long()
        self._edge_users, self._edge_items = pairs[0], pairs[1]
        # Pruning probabilities: the symmetric-normalised weight of each edge on the full graph.
        self._edge_prob = sym_norm_weights(pairs[0], pairs[1], n_users, n_items)
        self._n_keep = max(1, int(pairs.shape[1] * (1.0 - dropout)))
        # Epochs drawn so far and triples seen in the current one (kept in the state dict, so a
        # resumed run draws the same pruned graphs as an uninterrupted one).
        self.register_buffer("prune_epoch", torch.zeros((), dtype=torch.long))
        self._seen = 0
        self._pruned: Propagation | None = None

    @classmethod
    def build(cls, params: FREEDOMConfig, data, graph, device) -> FREEDOM:
        image, text = feature_tensors(cls.name, data)
        # The pruning seed comes from the global generator, which the trainer seeds.
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        # feat_embed_dim is not an argument: the config holds it equal to embedding_size.
        model = cls(graph, torch.from_numpy(data.train), image, text, data.n_users,
                    **config_kwargs(params, "feat_embed_dim"), seed=seed)
        return model.to(device)

    def prune(self, epoch: int) -> tuple[Tensor, Tensor]:
        """Degree-sensitive edge pruning for ``epoch``: the kept (users, items) edge lists."""
        if self.dropout <= 0.0:
            return self._edge_users, self._edge_items
        gen = torch.Generator().manual_seed(self.seed + int(epoch))
        keep = torch.multinomial(self._edge_prob, self._n_keep, replacement=False, generator=gen)
        return self._edge_users[keep], self._edge_items[keep]

    def _resample(self) -> None:
        users, items = self.prune(int(self.prune_epoch))
        w = sym_norm_weights(users, items, self.n_users, self.n_items)
        g = interaction_graph(users, items, w, self.n_users, self.n_items)
        self._pruned = Propagation(g, [(INTERACTS, 1.0), (INTERACTED_BY, 1.0)])
        self.prune_epoch += 1

    def _training_graph(self, batch_size: int) -> Propagation:
        # One pruned graph per epoch: an epoch presents every training pair once, so a new
        # graph is drawn whenever a full epoch of triples has been seen.
        if self._pruned is None or self._seen >= self._edge_users.shape[0]:
            self._resample()
            self._seen = 0
        self._seen += batch_size
        return self._pruned

    def forward_graph(self, ui_prop: Propagation) -> tuple[Tensor, Tensor]:
        """User (U, d) and item (I, d) representations over the given user-item operator."""
        h = self.item_prop({ITEM: self.item_emb}, self.n_mm_layers, "last")[ITEM]  # (I, d)
        out = ui_prop({USER: self.user_emb, ITEM: self.item_emb}, self.n_ui_layers, "mean")
        return out[USER], out[ITEM] + h

    def embeddings(self) -> tuple[Tensor, Tensor]:
        return self.forward_graph(self.full_prop)

    def configure_optimizer(self, lr: float) -> torch.optim.Optimizer:
        return fused_optimizer(torch.optim.Adam, self.parameters(), lr=lr)

    def loss(self, batch: Batch) -> LossOut:
        users, items = self.forward_graph(self._training_graph(batch.users.shape[0]))
        u = users[batch.users]  # (B, d)
        bpr = bpr_loss((u * items[batch.pos]).sum(-1), (u * items[batch.neg]).sum(-1))
        # Projecting only the batch's rows equals projecting the whole table, then indexing.
        feat = 0.0
        for table, proj in ((self.text_table, self.text_proj), (self.image_table, self.image_proj)):
            p, n = proj(table[batch.pos]), proj(table[batch.neg])  # (B, d)
            feat = feat + bpr_loss((u * p).sum(-1), (u * n).sum(-1))
        feat = self.reg_weight * feat
        return LossOut(bpr + feat, {"bpr": bpr.detach(), "feat": feat.detach()})
