"""REARM: Refining contrastive learning and homography relations (Ma et al., ACM MM 2025).

Paper: https://arxiv.org/abs/2508.13745. Spec: ``shared/spec/rearm.md`` sections 2-4.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.profiler import record_function

from rearm_dgl.config import check
from rearm_dgl.graphs.knn import user_interest_features
from rearm_dgl.graphs.propagate import Propagation
from rearm_dgl.graphs.schema import (
    INTERACTED_BY,
    INTERACTS,
    ITEM,
    ITEM_CO,
    ITEM_SEMANTIC_IMAGE,
    ITEM_SEMANTIC_TEXT,
    USER,
    USER_CO,
    USER_INTEREST_IMAGE,
    USER_INTEREST_TEXT,
)
from rearm_dgl.models import registry
from rearm_dgl.models.attention import TokenAttention
from rearm_dgl.models.base import (
    Batch,
    LossOut,
    ModelConfig,
    Recommender,
    bpr_loss,
    check_fields,
    fused_optimizer,
    require_features,
    xavier_linear,
)
from rearm_dgl.models.normalize import l2_normalize
from rearm_dgl.models.prelu_linear import prelu_linear
from rearm_dgl.models.projection import table_projection

if TYPE_CHECKING:
    from rearm_dgl.data.dataset import Interactions


@dataclass(frozen=True)
class REARMConfig(ModelConfig):
    """REARM hyperparameters. Defaults are the paper's Baby settings (spec section 6).

    Graph sizes (``user_knn_k``, ``item_knn_k``) live in :class:`~rearm_dgl.config.GraphConfig`
    because they change the heterograph.

    Attributes:
        embedding_size: d, the ID embedding width.
        n_layers: Heterography (LightGCN) layers over the interactions.
        n_uu_layers: User homography layers over G_u.
        n_ii_layers: Item homography layers over G_i.
        rank: r, the rank of the meta-network's per-node low-rank map.
        s_drop: Attention-weight dropout of the two self-attention blocks.
        m_drop: Attention-weight dropout of the two mutual (cross) attention blocks.
        u_mm_image_weight: b, image share of the user interest graph.
        i_mm_image_weight: a, image share of the item semantic graph.
        uu_co_weight: c_u, co-occurrence share of G_u.
        ii_co_weight: c_i, co-occurrence share of G_i.
        cl_tmp: tau of the InfoNCE loss.
        cl_loss_weight: Weight of the contrastive loss.
        diff_loss_weight: Weight of the orthogonal constraint.
        reg_weight: AdamW weight decay on all parameters.
        train_meta: Let ``meta_u``/``meta_i`` train. False (the authors' code) computes
            ``z = meta(F)`` detached, so they never get a gradient and keep their initial
            weights; True leaves ``z`` attached, so gradients reach ``meta_*`` and, through
            them, ``F``.
        use_share: Ablation switch (spec section 7); False removes the meta-network share
            branch: the third block of the representation becomes ``H`` instead of
            ``PReLU(share) + H`` (the width stays 3d), and the meta network is unused.
        use_orth: False drops the orthogonal constraint (its loss part is 0).
        use_cl: False drops the contrastive loss (its loss part is 0).
        use_user_co: False removes user co-occurrence: ``G_u = S_u``.
        use_item_co: False removes item co-occurrence: ``G_i = S_i``.
        use_user_interest: False removes the user interest kNN graph: ``G_u = C_u``.
        use_item_semantic: False removes the item semantic kNN graph: ``G_i = C_i``.
        use_homography: False skips the propagation over ``G_u`` and ``G_i``; the rows of
            ``[E | v | t]`` are still L2-normalised, so everything downstream sees inputs of
            the same scale as in the full model.
        use_attention: False drops only the attention term of the four item blocks (spec
            3.4-3.5): each block ``PReLU(LN(x + MHA(q, x, x)))`` becomes ``PReLU(LN(x))``, so
            ``t2v = PReLU(LN(PReLU(LN(iv))))`` and ``v2t`` alike from ``it``. The residual,
            the shared LayerNorm and the PReLU stay.
        use_layernorm: False drops the shared LayerNorm from the four blocks:
            ``PReLU(x + MHA(q, x, x))`` (``PReLU(x)`` with ``use_attention`` false too). Not
            part of the paper's ablation; it shows what the LayerNorm carries (see
            :class:`REARM`).
    """

    embedding_size: int = 64
    n_layers: int = 4
    n_uu_layers: int = 1
    n_ii_layers: int = 1
    rank: int = 3
    s_drop: float = 0.4
    m_drop: float = 0.6
    u_mm_image_weight: float = 0.2
    i_mm_image_weight: float = 0.0
    uu_co_weight: float = 0.4
    ii_co_weight: float = 0.2
    cl_tmp: float = 0.6
    cl_loss_weight: float = 5e-6
    diff_loss_weight: float = 5e-5
    reg_weight: float = 5e-4
    train_meta: bool = False
    use_share: bool = True
    use_orth: bool = True
    use_cl: bool = True
    use_user_co: bool = True
    use_item_co: bool = True
    use_user_interest: bool = True
    use_item_semantic: bool = True
    use_homography: bool = True
    use_attention: bool = True
    use_layernorm: bool = True

    def __post_init__(self):
        check_fields(self, "rearm", {
            "embedding_size": ">= 1", "n_layers": ">= 0", "n_uu_layers": ">= 0",
            "n_ii_layers": ">= 0", "rank": ">= 1", "s_drop": "[0, 1]", "m_drop": "[0, 1]",
            "u_mm_image_weight": "[0, 1]", "i_mm_image_weight": "[0, 1]",
            "uu_co_weight": "[0, 1]", "ii_co_weight": "[0, 1]", "cl_tmp": "> 0",
            "cl_loss_weight": ">= 0", "diff_loss_weight": ">= 0", "reg_weight": ">= 0"})
        check(self.use_user_co or self.use_user_interest, "rearm.use_user_interest",
              "G_u needs co-occurrence or the interest graph; to drop both set "
              "rearm.use_homography=false instead")
        check(self.use_item_co or self.use_item_semantic, "rearm.use_item_semantic",
              "G_i needs co-occurrence or the semantic graph; to drop both set "
              "rearm.use_homography=false instead")


def _first_occurrence(ids: Tensor) -> Tensor:
    """Bool (n,): True at the first position of each distinct id (fixed shape, no host sync)."""
    ordered, order = torch.sort(ids, stable=True)
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return torch.empty_like(first).scatter_(0, order, first)


def _sync_free(x: Tensor) -> bool:
    """Whether to avoid operators with a data-dependent output size (a host sync) for ``x``.

    On the CPU there is no device to wait for, so the smaller exact form is used.
    """
    return x.device.type != "cpu"


class _CrossEntropyOfDots(torch.autograd.Function):
    """``cross_entropy(a @ b.T, arange)`` over the rows (and columns) that ``keep`` marks.

    Equal to ``F.cross_entropy`` with the other columns at ``-inf`` and the other rows
    ignored, in less memory: the (m, m) logits are turned into the softmax in place and kept
    for the backward, which makes the logits' gradient ``(P - I) / count`` in that same buffer.
    Autograd's ``cross_entropy`` holds the log-softmax, its gradient and the logits' gradient,
    three (m, m) tensors at the start of the backward, where REARM's batch peaks (Baby:
    m about 4,000, so 61 MB each).
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, keep: Tensor | None) -> Tensor:
        logits = a @ b.T  # (m, m)
        diagonal = logits.diagonal().clone()
        if keep is not None:
            logits.masked_fill_(~keep[None, :], float("-inf"))
        # The log-sum-exp and the softmax from one exp pass, in the logits' own buffer.
        top = logits.amax(dim=1, keepdim=True)  # every row has a kept column: finite
        probs = logits.sub_(top).exp_()
        total = probs.sum(dim=1, keepdim=True)
        probs.div_(total)
        per_row = (total.log_() + top)[:, 0] - diagonal
        if keep is None:
            weight = None
            loss = per_row.mean()
        else:
            weight = keep.to(a.dtype) / keep.sum()
            loss = (per_row * weight).sum()  # rows not kept have weight 0
        ctx.save_for_backward(probs, a, b, weight)
        ctx.spent = False
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        if ctx.spent:
            raise RuntimeError("REARM's InfoNCE backward reuses its buffer: it runs once per "
                               "forward (no retain_graph)")
        ctx.spent = True
        probs, a, b, weight = ctx.saved_tensors
        grad = probs  # (P - I) * row weight * g, in place
        grad.diagonal().sub_(1.0)
        if weight is None:
            grad.mul_(g / grad.shape[0])
        else:
            grad.mul_((weight * g)[:, None])
        return grad @ b, grad.T @ a, None


def _info_nce(a: Tensor, b: Tensor, tau: float, ids: Tensor) -> Tensor:
    """One-direction InfoNCE over the distinct ``ids``, view ``a`` the anchor -> scalar.

    ``-mean_n log(exp(cos(a_n, b_n)/tau) / sum_m exp(cos(a_n, b_m)/tau))`` with ``n`` and
    ``m`` over the distinct ids; the denominator includes the positive. ``a``, ``b`` (n, d)
    are the rows of ``ids`` (n,), repeats included. On the CPU the repeats are dropped
    (the (m, m) logits are about half the (n, n) ones); on a GPU they are masked out
    instead, since dropping them has a data-dependent size that would force a host sync.
    """
    keep = _first_occurrence(ids)  # (n,)
    if not _sync_free(ids):
        rows = keep.nonzero()[:, 0]  # (m,)
        a, b = a[rows], b[rows]
    return _CrossEntropyOfDots.apply(l2_normalize(a) / tau, l2_normalize(b),
                                     keep if _sync_free(ids) else None)


def _orthogonal(x: Tensor, y: Tensor) -> Tensor:
    """``mean((x^T y)^2)`` of the batch-centred rows, each divided by its detached norm + 1e-6."""
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    x = x / (x.norm(dim=1, keepdim=True).detach() + 1e-6)
    y = y / (y.norm(dim=1, keepdim=True).detach() + 1e-6)
    return (x.T @ y).pow(2).mean()


class _LowRankMLP(nn.Module):
    """Linear(d -> d*r) -> PReLU (its own) -> Linear(d*r -> d*r) -> L2 normalise."""

    def __init__(self, d: int, rank: int):
        super().__init__()
        self.inner = nn.Linear(d, d * rank)
        self.act = nn.PReLU()
        self.outer = nn.Linear(d * rank, d * rank)

    def forward(self, z: Tensor) -> Tensor:
        return l2_normalize(prelu_linear(self.inner(z), self.act, self.outer))


@dataclass
class _Forward:
    """One full-graph forward pass: per node type, F (n, 2d), H (n, d), representation (n, 3d)."""

    feat: dict[str, Tensor]
    ids: dict[str, Tensor]
    rep: dict[str, Tensor]


@registry.register
class REARM(Recommender):
    """REARM over the relation heterograph (spec sections 2-4).

    Per forward pass (the whole graph, once per training batch):

    1. Project the trainable feature tables to d: item ``iv, it``, user ``uv, ut``.
    2. Homography: ``[E_i | iv | it] <- G_i^L [E_i | iv | it]`` (last layer), row-wise L2
       normalised over 3d, and likewise for users with ``G_u``. ``G_i = c_i C_i + (1 - c_i)
       (a S_i^image + (1 - a) S_i^text)``; ``G_u`` alike with ``c_u`` and ``b``.
    3. Item attention over the d dims of each item: self-attention per modality, then
       cross-attention, each as ``PReLU(LN(x + MHA(q, k, v)))``; users get ``PReLU``.
    4. Heterography (LightGCN, mean of layers 0..L) of ``F = [uv | ut ; t2v | v2t]`` and of
       ``H = [e_u ; e_i]``.
    5. Meta network: ``share = (H W1) W2`` with per-node ``W1`` (d x r) and ``W2`` (r x d)
       generated from ``F``.
    6. Representation ``[PReLU(F_v) + H | PReLU(F_t) + H | PReLU(share) + H]`` (3d); the score
       is the dot product.

    Why the attention changes little here: every token is one scalar (embedding size 1), so
    the score ``q_i k_j`` spans a small range and the softmax weights over the d = 64
    positions are nearly uniform. The attention output is then nearly the same number at
    every position of an item, and the LayerNorm that follows removes a per-item constant.
    With ``s_drop = 1`` (Sports' preset) every self-attention weight is dropped in training,
    so the two self-attention blocks add only their out-projection bias, which the LayerNorm
    removes exactly: they are a no-op in training. The LayerNorm, not the attention, is what
    the blocks contribute: without it the non-negative image features keep one direction
    shared by all items, and BPR turns it into a popularity ranking (``use_layernorm``).

    The forward pass carries ``torch.profiler.record_function`` labels ``rearm.projections``,
    ``rearm.homography``, ``rearm.attention``, ``rearm.heterography``, ``rearm.meta`` and
    ``rearm.losses``.

    Loss: BPR + ``cl_loss_weight`` InfoNCE between the two views of ``F`` + ``diff_loss_weight``
    orthogonal constraint; L2 comes from AdamW's weight decay on every parameter.

    Args:
        graph: The relation heterograph (read at construction, never changed).
        item_image: (I, F_v) item image features, the initial image table.
        item_text: (I, F_t) item text features, the initial text table.
        user_image: (U, F_v) user image interests ``P_v``, the initial user image table.
        user_text: (U, F_t) user text interests ``P_t``.
        params: The hyperparameters and ablation switches.
        backend: Propagation backend (see :class:`~rearm_dgl.graphs.Propagation`).
    """

    name: ClassVar[str] = "rearm"
    config_cls: ClassVar[type[ModelConfig]] = REARMConfig
    needs_features: ClassVar[bool] = True
    loss_parts: ClassVar[tuple[str, ...]] = ("bpr", "cl", "orth")

    def __init__(self, graph, item_image: Tensor, item_text: Tensor, user_image: Tensor,
                 user_text: Tensor, params: REARMConfig | None = None, backend: str = "auto"):
        super().__init__()
        p = params if params is not None else REARMConfig()
        self.params = p
        self.n_users, self.n_items = user_image.shape[0], item_image.shape[0]
        d = p.embedding_size
        self.d = d

        self.user_prop = self.item_prop = None
        if p.use_homography:
            self.user_prop = Propagation(graph, _homograph(
                USER_CO, USER_INTEREST_IMAGE, USER_INTEREST_TEXT, p.uu_co_weight,
                p.u_mm_image_weight, p.use_user_co, p.use_user_interest), backend=backend)
            self.item_prop = Propagation(graph, _homograph(
                ITEM_CO, ITEM_SEMANTIC_IMAGE, ITEM_SEMANTIC_TEXT, p.ii_co_weight,
                p.i_mm_image_weight, p.use_item_co, p.use_item_semantic), backend=backend)
        self.inter_prop = Propagation(graph, [(INTERACTS, 1.0), (INTERACTED_BY, 1.0)],
                                      backend=backend)

        self.user_id = nn.Parameter(torch.empty(self.n_users, d).normal_(0.0, 0.1))
        self.item_id = nn.Parameter(torch.empty(self.n_items, d).normal_(0.0, 0.1))
        # The raw feature tables are trained too (the authors' code fine-tunes them).
        self.item_image = nn.Parameter(item_image.detach().clone().float())
        self.item_text = nn.Parameter(item_text.detach().clone().float())
        self.user_image = nn.Parameter(user_image.detach().clone().float())
        self.user_text = nn.Parameter(user_text.detach().clone().float())
        self.proj_item_image = xavier_linear(item_image.shape[1], d, normal=True)
        self.proj_item_text = xavier_linear(item_text.shape[1], d, normal=True)
        self.proj_user_image = xavier_linear(user_image.shape[1], d, normal=True)
        self.proj_user_text = xavier_linear(user_text.shape[1], d, normal=True)

        self.self_attn_image = TokenAttention(p.s_drop)
        self.self_attn_text = TokenAttention(p.s_drop)
        self.mutual_attn_t2v = TokenAttention(p.m_drop)
        self.mutual_attn_v2t = TokenAttention(p.m_drop)
        self.norm = nn.LayerNorm(d)  # shared by all four attention blocks
        self.act = nn.PReLU()        # shared by every PReLU outside the meta MLPs

        self.meta_u = nn.Linear(2 * d, d)
        self.meta_i = nn.Linear(2 * d, d)
        self.mlp_u1 = _LowRankMLP(d, p.rank)
        self.mlp_u2 = _LowRankMLP(d, p.rank)
        self.mlp_i1 = _LowRankMLP(d, p.rank)
        self.mlp_i2 = _LowRankMLP(d, p.rank)

    @classmethod
    def build(cls, params: REARMConfig, data: Interactions, graph, device: torch.device
              ) -> REARM:
        require_features(cls.name, data)
        image = np.asarray(data.image_feat, dtype=np.float32)
        text = np.asarray(data.text_feat, dtype=np.float32)
        model = cls(
            graph,
            item_image=torch.from_numpy(image),
            item_text=torch.from_numpy(text),
            user_image=torch.from_numpy(user_interest_features(data.train_csr, image)),
            user_text=torch.from_numpy(user_interest_features(data.train_csr, text)),
            params=params,
        )
        if device.type == "cpu" and _retention_affordable(model):
            reuse_freed_memory()
        return model.to(device)

    # -- forward pieces ----------------------------------------------------------------------

    def _homography(self, prop: Propagation | None, parts: list[Tensor], layers: int, ntype: str
                    ) -> list[Tensor]:
        """``[x_1 | x_2 | x_3] <- G^L [...]`` (last layer), L2-normalised over all columns."""
        x = torch.cat(parts, dim=1)  # (n, 3d)
        if prop is not None:
            x = prop({ntype: x}, layers, "last")[ntype]
        return list(l2_normalize(x).split(self.d, dim=1))

    def _block(self, attn: TokenAttention, q: Tensor, kv: Tensor) -> Tensor:
        """``PReLU(LN(kv + MHA(q, kv, kv)))`` over the d dims of each node: (n, d).

        ``use_attention`` false drops the ``MHA`` term, ``use_layernorm`` false the ``LN``.
        """
        x = kv + attn(q, kv, kv) if self.params.use_attention else kv
        if self.params.use_layernorm:
            x = self.norm(x)
        return self.act(x)

    def _share(self, meta: nn.Linear, mlp1: _LowRankMLP, mlp2: _LowRankMLP, feat: Tensor,
               ids: Tensor) -> Tensor:
        """``(H W1) W2`` with per-node ``W1`` (d, r), ``W2`` (r, d) made from ``F``: (n, d)."""
        n, d, r = ids.shape[0], self.d, self.params.rank
        if self.params.train_meta:
            z = meta(feat)
        else:
            with torch.no_grad():  # the authors' code detaches it: meta never trains
                z = meta(feat)
        w1 = mlp1(z).view(n, d, r)
        w2 = mlp2(z).view(n, r, d)
        w1 = torch.softmax(w1 + w1.mean(dim=0), dim=1)  # over d
        w2 = torch.softmax(w2 + w2.mean(dim=0), dim=1)  # over r
        return torch.bmm(torch.bmm(ids[:, None, :], w1), w2)[:, 0]  # (n, d)

    def _forward(self) -> _Forward:
        p, d = self.params, self.d
        with record_function("rearm.projections"):
            iv = table_projection(self.item_image, self.proj_item_image)  # (I, d)
            it = table_projection(self.item_text, self.proj_item_text)
            uv = table_projection(self.user_image, self.proj_user_image)  # (U, d)
            ut = table_projection(self.user_text, self.proj_user_text)
        with record_function("rearm.homography"):
            e_i, iv, it = self._homography(self.item_prop, [self.item_id, iv, it],
                                           p.n_ii_layers, ITEM)
            e_u, uv, ut = self._homography(self.user_prop, [self.user_id, uv, ut],
                                           p.n_uu_layers, USER)
        with record_function("rearm.attention"):
            iv = self._block(self.self_attn_image, iv, iv)
            it = self._block(self.self_attn_text, it, it)
            t2v = self._block(self.mutual_attn_t2v, it, iv)
            v2t = self._block(self.mutual_attn_v2t, iv, it)
            uv, ut = self.act(uv), self.act(ut)
        with record_function("rearm.heterography"):
            # F and H propagate over the same operator: one pass over 3d columns.
            out = self.inter_prop({USER: torch.cat([uv, ut, e_u], dim=1),
                                   ITEM: torch.cat([t2v, v2t, e_i], dim=1)},
                                  p.n_layers, "mean")
            # F (n, 2d) and H (n, d) split, not sliced: the backward joins the pieces'
            # gradients in one pass, where each slice would fill a zero tensor of the whole
            # width and the two would then be added.
            feat, ids = {}, {}
            for nt, x in out.items():
                feat[nt], ids[nt] = x.split([2 * d, d], dim=1)
        with record_function("rearm.meta"):
            rep = {}
            for nt, meta, mlp1, mlp2 in ((USER, self.meta_u, self.mlp_u1, self.mlp_u2),
                                         (ITEM, self.meta_i, self.mlp_i1, self.mlp_i2)):
                h = ids[nt]
                f_v, f_t = feat[nt].split(d, dim=1)
                third = self.act(self._share(meta, mlp1, mlp2, feat[nt], h)) + h if p.use_share \
                    else h
                rep[nt] = torch.cat([self.act(f_v) + h, self.act(f_t) + h, third],
                                    dim=1)  # (n, 3d)
        return _Forward(feat, ids, rep)

    # -- contract ----------------------------------------------------------------------------

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Users (U, 3d) and items (I, 3d); call in eval mode for the full attention."""
        out = self._forward()
        return out.rep[USER], out.rep[ITEM]

    def loss(self, batch: Batch) -> LossOut:
        p, d = self.params, self.d
        out = self._forward()
        with record_function("rearm.losses"):
            u = out.rep[USER][batch.users]  # (B, 3d)
            pos = (u * out.rep[ITEM][batch.pos]).sum(dim=1)
            neg = (u * out.rep[ITEM][batch.neg]).sum(dim=1)
            bpr = bpr_loss(pos, neg)
            fu, fi = out.feat[USER], out.feat[ITEM]
            zero = bpr.new_zeros(())
            cl = orth = zero
            xu = fu[batch.users]  # (B, 2d), users with repeats
            if p.use_cl:
                items = torch.cat([batch.pos, batch.neg])
                xc = fi[items]  # (2B, 2d)
                cl = p.cl_loss_weight * (_info_nce(xc[:, :d], xc[:, d:], p.cl_tmp, items)
                                         + _info_nce(xu[:, :d], xu[:, d:], p.cl_tmp,
                                                     batch.users))
            if p.use_orth:
                xi = fi[batch.pos]  # positive items
                orth = p.diff_loss_weight * (_orthogonal(xu[:, :d], xu[:, d:])
                                             + _orthogonal(xi[:, :d], xi[:, d:]))
            total = bpr + cl + orth
        return LossOut(total, {"bpr": bpr.detach(), "cl": cl.detach(), "orth": orth.detach()})

    def configure_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """AdamW, ``weight_decay = reg_weight`` on every parameter; the fused kernel if possible.

        The fused kernel computes the same update about 9x faster over REARM's ~10^8 feature
        table parameters.
        """
        return fused_optimizer(torch.optim.AdamW, self.parameters(), lr=lr,
                               weight_decay=self.params.reg_weight)


# glibc's mallopt parameters (malloc.h) and the largest value an int takes.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _INT_MAX = -1, -3, 2**31 - 1


def _retention_affordable(model: nn.Module) -> bool:
    """Whether keeping freed blocks (:func:`reuse_freed_memory`) is safe for this model.

    The retained blocks come on top of the training state (parameters, gradients and two
    AdamW moments, 4x the parameters), and they fragment as sizes vary. At Baby size the
    state is 1.9 GB; at Amazon-Elec size it is 17 GiB, and with retention the second batch
    ran out of a 23 GiB machine (without it the peak was 20.2 GiB). So retention is used only
    while the training state is at most a quarter of the physical memory.
    """
    state = 4 * sum(p.numel() * p.element_size() for p in model.parameters())
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return False
    return state <= memory // 4


def reuse_freed_memory() -> bool:
    """Let glibc keep large freed blocks for reuse instead of returning them to the OS.

    Each training batch allocates its activations afresh: dozens of (n, 3d) tensors of
    5-15 MB at Baby size, 2.9 GiB in blocks of 1 MiB or more per batch. By default glibc
    serves the larger ones from new mmap'd pages, so each batch pays the page faults and the
    kernel's zeroing again (about 0.08 s per 0.3 GB on one core). Raising the mmap and trim
    thresholds serves them from the heap and keeps the freed heap for the next batch. Baby
    preset, whole epochs, 2 threads, two runs each: median batch 0.968 / 0.970 s with it,
    0.995 / 0.986 s without, the same peak RSS. What is computed does not change. Returns
    False (doing nothing) without glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _INT_MAX)
                    and libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
    except (OSError, AttributeError):
        return False


def _homograph(co, image, text, co_weight: float, image_weight: float, use_co: bool,
               use_modal: bool) -> list[tuple[tuple[str, str, str], float]]:
    """Relations and scales of ``G = c C + (1 - c)(w S^image + (1 - w) S^text)``.

    Without co-occurrence ``G = S``; without the modality graph ``G = C``.
    """
    if use_co and use_modal:
        c = co_weight
    else:
        c = 1.0 if use_co else 0.0
    return [(co, c), (image, (1.0 - c) * image_weight), (text, (1.0 - c) * (1.0 - image_weight))]
