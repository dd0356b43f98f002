"""DRAGON: dyadic relations enhanced by homogeneous graphs (Zhou et al., ECAI 2023).

Paper: "Enhancing Dyadic Relations with Homogeneous Graphs for Multimodal Recommendation",
https://arxiv.org/abs/2301.12097. Users have a free preference vector per modality; items
have no ID embedding, only an MLP encoding of each modality's (frozen) features:

    F_m = MLP_m(X_m)                      (Linear F_m -> 256, LeakyReLU 0.01, Linear -> d)
    Z_m = rownorm([P_m; F_m]),   H_m = Z_m + A Z_m + A^2 Z_m       (A: sym-normalised)
    u0 = [a_uv H_v[u] || a_ut H_t[u]],   i0 = [H_v[i] || H_t[i]]          (2d wide)
    item = i0 + S^{n_mm_layers} i0,   S = w N(B_v) + (1 - w) N(B_t)   (binary kNN, 1/k each)
    user = u0 + G u0,   s(u, i) = user . item

G is the user co-occurrence graph: each user's top ``n_user_neighbours`` users by shared
training items, padded (users with fewer) by an urn process and redrawn every epoch, with
weights the softmax of the shared counts; users who share no item with anyone get a zero
row. The loss is BPR with a base-2 log plus ``reg_weight`` times the mean squared batch-user
preferences and the mean squared modality weights ``a`` (free scalars, initialised near 0.5).
As in the reference code, evaluation can score the representations cached by the last
training batch (``eval_embeddings: cached_last_batch``) instead of recomputing them.
The paper describes attention over the modalities; the reference code's ``a`` is a free,
unnormalised per-user weight, which is followed here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rearm_dgl.graphs.cooccurrence import cooccurrence_lists, urn_pad
from rearm_dgl.graphs.derived import item_knn_graph
from rearm_dgl.graphs.propagate import Propagation, SparseOperator
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
    add_last_batch_cache,
    bpr_loss,
    check_fields,
    config_kwargs,
    feature_tensors,
    store_last_batch,
    xavier_parameter,
)


@dataclass(frozen=True)
class DRAGONConfig(ModelConfig):
    """DRAGON hyperparameters (MMRec's ``DRAGON.yaml``). The item kNN k is ``graph.item_knn_k``.

    Attributes:
        embedding_size: d, the width of each modality's user and item vectors.
        hidden_size: Hidden width of the feature MLPs (256 in the reference).
        n_ui_layers: Propagation steps over the user-item graph (2 in the reference).
        n_mm_layers: Layers over the item-item graph.
        mm_image_weight: w, the image share of the item-item graph.
        n_user_neighbours: Entries per user in the co-occurrence graph (40 in the reference).
        reg_weight: Weight of the preference and modality-weight penalties.
        eval_embeddings: ``cached_last_batch`` scores with the representations of the last
            training batch (the reference); ``recompute`` computes them afresh.
    """

    embedding_size: int = 64
    hidden_size: int = 256
    n_ui_layers: int = 2
    n_mm_layers: int = 1
    mm_image_weight: float = 0.1
    n_user_neighbours: int = 40
    reg_weight: float = 1e-3
    eval_embeddings: Literal["cached_last_batch", "recompute"] = "cached_last_batch"

    def __post_init__(self):
        check_fields(self, "dragon", {
            "embedding_size": ">= 1", "hidden_size": ">= 1", "n_ui_layers": ">= 0",
            "n_mm_layers": ">= 0", "mm_image_weight": "[0, 1]", "n_user_neighbours": ">= 1",
            "reg_weight": ">= 0"})


def user_graph_weights(counts: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Row softmax of the (padded) shared counts (U, k); rows with ``m = 0`` get zeros."""
    z = counts - counts.max(axis=1, keepdims=True)
    e = np.exp(z)
    w = e / e.sum(axis=1, keepdims=True)
    w[m == 0] = 0.0
    return w


@registry.register
class DRAGON(Recommender):
    """DRAGON: per-modality heterogeneous GCN, then item kNN and user co-occurrence graphs.

    Args:
        graph: The relation heterograph; its interaction relations (symmetric weights) and
            item semantic kNN relations (neighbour sets) are read.
        train_csr: (U, I) binary training matrix, for the user co-occurrence counts.
        image_feat: (I, F_v) float32 image features (frozen).
        text_feat: (I, F_t) float32 text features (frozen).
        embedding_size: d (default 64).
        hidden_size: MLP hidden width (default 256).
        n_ui_layers: User-item propagation steps (default 2).
        n_mm_layers: Item-item layers (default 1).
        mm_image_weight: Image share of the item-item graph (default 0.1).
        n_user_neighbours: Co-occurrence entries per user (default 40).
        reg_weight: Penalty weight (default 1e-3).
        eval_embeddings: ``cached_last_batch`` (default) or ``recompute``.
        seed: Seed of the tie order and the per-epoch padding draws.
    """

    name: ClassVar[str] = "dragon"
    config_cls: ClassVar[type[ModelConfig]] = DRAGONConfig
    needs_features: ClassVar[bool] = True
    loss_parts: ClassVar[tuple[str, ...]] = ("bpr", "reg")

    def __init__(self, graph, train_csr: sp.csr_matrix, image_feat: Tensor, text_feat: Tensor,
                 embedding_size: int = 64, hidden_size: int = 256, n_ui_layers: int = 2,
                 n_mm_layers: int = 1, mm_image_weight: float = 0.1,
                 n_user_neighbours: int = 40, reg_weight: float = 1e-3,
                 eval_embeddings: str = "cached_last_batch", seed: int = 0):
        super().__init__()
        n_users, n_items = train_csr.shape
        self.n_users, self.n_items = n_users, n_items
        self.n_ui_layers, self.n_mm_layers = n_ui_layers, n_mm_layers
        self.reg_weight, self.eval_embeddings = reg_weight, eval_embeddings
        self.seed = int(seed)

        # Raw features, frozen (the reference creates trainable copies its forward never reads).
        self.register_buffer("image_feat", image_feat.clone(), persistent=False)
        self.register_buffer("text_feat", text_feat.clone(), persistent=False)
        self.image_pref = xavier_parameter(n_users, embedding_size, normal=True)
        self.text_pref = xavier_parameter(n_users, embedding_size, normal=True)
        self.image_mlp = nn.Sequential(nn.Linear(image_feat.shape[1], hidden_size),
                                       nn.LeakyReLU(0.01), nn.Linear(hidden_size, embedding_size))
        self.text_mlp = nn.Sequential(nn.Linear(text_feat.shape[1], hidden_size),
                                      nn.LeakyReLU(0.01), nn.Linear(hidden_size, embedding_size))
        # a: xavier-normal draws of a (U, 2, 1) tensor, softmaxed over the modalities once.
        a = nn.init.xavier_normal_(torch.empty(n_users, 2, 1))
        self.modal_weight = nn.Parameter(torch.softmax(a, dim=1).squeeze(-1))  # (U, 2)

        self.ui_prop = Propagation(graph, [(INTERACTS, 1.0), (INTERACTED_BY, 1.0)])
        self.item_prop = Propagation(
            item_knn_graph(graph, (ITEM_SEMANTIC_IMAGE, ITEM_SEMANTIC_TEXT), "binary"),
            [(ITEM_SEMANTIC_IMAGE, mm_image_weight), (ITEM_SEMANTIC_TEXT, 1.0 - mm_image_weight)])
        self._neighbours, self._counts, self._m = cooccurrence_lists(
            train_csr, n_user_neighbours, seed=self.seed)
        self.user_graph = self.sample_user_graph(0)

        # What the last training batch computed, saved with the weights (for evaluation).
        width = 2 * embedding_size
        add_last_batch_cache(self, n_users, n_items, width)

    @classmethod
    def build(cls, params: DRAGONConfig, data, graph, device) -> DRAGON:
        image, text = feature_tensors(cls.name, data)
        # The sampling seed comes from the global generator, which the trainer seeds.
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        model = cls(graph, data.train_csr, image, text, **config_kwargs(params), seed=seed)
        return model.to(device)

    def sample_user_graph(self, epoch: int) -> SparseOperator:
        """The user co-occurrence graph G of ``epoch``: padded lists, softmax weights."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        neighbours, counts = urn_pad(self._neighbours, self._counts, self._m, rng)
        w = user_graph_weights(counts, self._m)  # (U, k)
        rows = np.repeat(np.arange(self.n_users), neighbours.shape[1])
        return SparseOperator(torch.from_numpy(rows), torch.from_numpy(neighbours.reshape(-1)),
                              torch.from_numpy(w.reshape(-1)), (self.n_users, self.n_users))

    def start_epoch(self, epoch: int) -> None:
        self.user_graph = self.sample_user_graph(epoch)

    def modality_views(self) -> tuple[Tensor, Tensor]:
        """The two-modality representations before the homogeneous graphs: (U, 2d), (I, 2d)."""
        users, items = [], []
        for pref, mlp, feat in ((self.image_pref, self.image_mlp, self.image_feat),
                                (self.text_pref, self.text_mlp, self.text_feat)):
            z = {USER: F.normalize(pref, dim=1), ITEM: F.normalize(mlp(feat), dim=1)}
            h = self.ui_prop(z, self.n_ui_layers, "sum")  # Z + A Z + A^2 Z
            users.append(h[USER])
            items.append(h[ITEM])
        a = self.modal_weight  # (U, 2)
        u0 = torch.cat([a[:, :1] * users[0], a[:, 1:] * users[1]], dim=1)  # (U, 2d)
        return u0, torch.cat(items, dim=1)  # (I, 2d)

    def forward_all(self) -> tuple[Tensor, Tensor]:
        """Final user (U, 2d) and item (I, 2d) representations."""
        u0, i0 = self.modality_views()
        items = i0 + self.item_prop({ITEM: i0}, self.n_mm_layers, "last")[ITEM]
        users = u0 + self.user_graph(u0)
        return users, items

    def embeddings(self) -> tuple[Tensor, Tensor]:
        if (not self.training and self.eval_embeddings == "cached_last_batch"
                and bool(self.has_cache)):
            return self.cached_users, self.cached_items
        return self.forward_all()

    def loss(self, batch: Batch) -> LossOut:
        users, items = self.forward_all()
        store_last_batch(self, users, items)
        u = users[batch.users]  # (B, 2d)
        pos, neg = (u * items[batch.pos]).sum(-1), (u * items[batch.neg]).sum(-1)
        bpr = bpr_loss(pos, neg) / math.log(2.0)  # the reference's log base 2
        reg = self.reg_weight * (self.image_pref[batch.users].pow(2).mean()
                                 + self.text_pref[batch.users].pow(2).mean()
                                 + self.modal_weight.pow(2).mean())
        return LossOut(bpr + reg, {"bpr": bpr.detach(), "reg": reg.detach()})
