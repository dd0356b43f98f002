"""The contract every recommender follows, so one trainer, evaluator and tuner drive all.

A model is an ``nn.Module`` built from typed scalars (its config dataclass), the
:class:`~rearm_dgl.data.dataset.Interactions` (counts and, where needed, features) and the
relation heterograph, which is passed in and never changed.

    model = Model.build(params, data, graph, device)
    out = model.loss(batch)              # LossOut(total, parts={"bpr": ..., ...})
    users, items = model.embeddings()    # final representations, (U, d'), (I, d')
    scores = model.score(user_ids, users, items)    # (B, I)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rearm_dgl.config import check
from rearm_dgl.errors import DataError

if TYPE_CHECKING:
    from rearm_dgl.data.dataset import Interactions


@dataclass(frozen=True)
class ModelConfig:
    """Base class of every model's hyperparameter dataclass."""


@dataclass
class Batch:
    """B training triples: ``users[b]`` prefers ``pos[b]`` over ``neg[b]``. Long tensors (B,)."""

    users: Tensor
    pos: Tensor
    neg: Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.users.to(device), self.pos.to(device), self.neg.to(device))


@dataclass
class LossOut:
    """A scalar loss and its named parts (``parts`` values are detached floats-as-tensors)."""

    total: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)


class Recommender(nn.Module):
    """Base class. Subclasses set ``name``, ``config_cls`` and ``needs_features``.

    Subclasses implement :meth:`build`, :meth:`embeddings` and :meth:`loss`; the default
    :meth:`score` is a dot product, which every model here uses.
    """

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[ModelConfig]] = ModelConfig
    needs_features: ClassVar[bool] = False
    #: False: the model ignores the heterograph, so the trainer does not build it.
    needs_graph: ClassVar[bool] = True
    #: Loss part names, in order, that ``loss`` returns (for logging every model alike).
    loss_parts: ClassVar[tuple[str, ...]] = ("bpr",)

    @classmethod
    def build(cls, params: ModelConfig, data: Interactions, graph, device: torch.device
              ) -> Recommender:
        """Construct the model for ``data`` and its heterograph, on ``device``."""
        raise NotImplementedError

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Final user (U, d') and item (I, d') representations for scoring."""
        raise NotImplementedError

    def loss(self, batch: Batch) -> LossOut:
        raise NotImplementedError

    def score(self, users: Tensor, user_emb: Tensor, item_emb: Tensor) -> Tensor:
        """Scores of every item for ``users`` (B,): (B, I)."""
        return user_emb[users] @ item_emb.T

    def configure_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """The optimiser this model is trained with (Adam by default)."""
        return fused_optimizer(torch.optim.Adam, self.parameters(), lr=lr)

    def start_epoch(self, epoch: int) -> None:
        """Called by the trainer before the batches of ``epoch`` (1, 2, ...); no-op by default.

        Models that redraw a graph or rebuild a learned structure once per epoch do it here
        (MMRec's ``pre_epoch_processing``). It must depend only on ``epoch`` and the model's
        state, so a resumed run replays the uninterrupted one.
        """

    def lr_scale(self, epoch: int) -> float:
        """Learning-rate multiplier for ``epoch`` (1, 2, ...); 1 (a constant rate) by default."""
        return 1.0


def require_features(model: str, data: Interactions) -> None:
    """Raise :class:`DataError` when a feature-based model meets a dataset without features."""
    if not data.has_features:
        raise DataError(
            data.source, f"model {model!r} needs image and text features; this dataset has none",
            "add image_feat.npy and text_feat.npy to the dataset folder (or stand-in features "
            "from benchmarks/standin_features.py), or train an ID-only model such as mf or "
            "lightgcn")


# Field rules that model configs share: the rule's test and the message a failure gives.
_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    ">= 1": (lambda v: v >= 1, "must be >= 1"),
    ">= 0": (lambda v: v >= 0, "must be >= 0"),
    "> 0": (lambda v: v > 0, "must be > 0"),
    "[0, 1]": (lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]"),
    "[0, 1)": (lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"),
    "(0, 1]": (lambda v: 0.0 < v <= 1.0, "must be in (0, 1]"),
}


def check_fields(params: ModelConfig, model: str, rules: dict[str, str]) -> None:
    """Check config fields against shared rules, in order, raising ``ConfigError``.

    ``rules`` maps a field name to one of ``">= 1"``, ``">= 0"``, ``"> 0"``, ``"[0, 1]"``,
    ``"[0, 1)"`` or ``"(0, 1]"``; a failure names the key ``<model>.<field>``. Checks that
    only one model makes stay as plain :func:`~rearm_dgl.config.check` calls in its config.
    """
    for name, rule in rules.items():
        ok, message = _RULES[rule]
        check(ok(getattr(params, name)), f"{model}.{name}", message)


def xavier_parameter(*shape: int, normal: bool = False) -> nn.Parameter:
    """A parameter of ``shape`` drawn Xavier-uniform (or Xavier-normal with ``normal``)."""
    init = nn.init.xavier_normal_ if normal else nn.init.xavier_uniform_
    return nn.Parameter(init(torch.empty(*shape)))


def xavier_linear(n_in: int, n_out: int, normal: bool = False) -> nn.Linear:
    """``nn.Linear(n_in, n_out)`` with a Xavier-uniform (or -normal) weight.

    The bias keeps PyTorch's default init, drawn before the weight is redrawn, as in the
    reference codes that re-initialise only the weights.
    """
    layer = nn.Linear(n_in, n_out)
    (nn.init.xavier_normal_ if normal else nn.init.xavier_uniform_)(layer.weight)
    return layer


def step_decay(decay: float, decay_epochs: int, epoch: int) -> float:
    """``decay^((epoch - 1) / decay_epochs)``: a learning-rate scale for ``epoch`` (1, 2, ...)."""
    return decay ** ((epoch - 1) / decay_epochs)


def add_modality_inputs(module: nn.Module, image_feat: Tensor, text_feat: Tensor,
                        trainable: bool, width: int,
                        linear: Callable[[int, int], nn.Linear] = nn.Linear) -> None:
    """Give ``module`` its feature tables and their projections to ``width``.

    Sets, in this order (so seeded initialisation stays the same), ``image_table`` (I, F_v),
    ``text_table`` (I, F_t) (see :func:`add_feature_table`), then ``image_proj`` and
    ``text_proj``, built by ``linear(F_m, width)``.
    """
    add_feature_table(module, "image_table", image_feat, trainable)  # (I, F_v)
    add_feature_table(module, "text_table", text_feat, trainable)  # (I, F_t)
    module.image_proj = linear(image_feat.shape[1], width)
    module.text_proj = linear(text_feat.shape[1], width)


def feature_tensors(model: str, data: Interactions) -> tuple[Tensor, Tensor]:
    """The image (I, F_v) and text (I, F_t) features of ``data`` as tensors sharing its memory.

    Raises :class:`DataError` (see :func:`require_features`) when the dataset has none.
    """
    require_features(model, data)
    return torch.from_numpy(data.image_feat), torch.from_numpy(data.text_feat)


def config_kwargs(params: ModelConfig, *leave_out: str) -> dict[str, Any]:
    """The fields of ``params`` as keyword arguments, less ``leave_out``.

    Every model's constructor names its hyperparameters as its config does, so ``build``
    passes them by name and a reordered or added field cannot land in the wrong argument.
    """
    return {f.name: getattr(params, f.name) for f in fields(params) if f.name not in leave_out}


def add_last_batch_cache(module: nn.Module, n_users: int, n_items: int, width: int) -> None:
    """Give ``module`` buffers for the representations its last training batch computed.

    ``cached_users`` (U, width), ``cached_items`` (I, width) and the flag ``has_cache``. They
    are saved with the weights, so the best checkpoint scores as it did when it was validated
    (models whose reference code evaluates with the last batch's vectors, DRAGON and SLMRec).
    Fill them with :func:`store_last_batch`.
    """
    module.register_buffer("cached_users", torch.zeros(n_users, width))
    module.register_buffer("cached_items", torch.zeros(n_items, width))
    module.register_buffer("has_cache", torch.zeros((), dtype=torch.bool))


def store_last_batch(module: nn.Module, users: Tensor, items: Tensor) -> None:
    """Copy a batch's user (U, width) and item (I, width) representations into the cache."""
    with torch.no_grad():
        module.cached_users.copy_(users)
        module.cached_items.copy_(items)
        module.has_cache.fill_(True)


def add_feature_table(module: nn.Module, name: str, feat: Tensor, trainable: bool) -> None:
    """Give ``module`` its copy of a feature matrix as ``module.<name>``.

    Trainable: a parameter initialised with the features, which the optimiser updates (as
    the reference code of LATTICE, MGCN and BM3 does). Frozen: a buffer left out of the state
    dict (the dataset holds it), which still follows ``module.to(device)``.
    """
    if trainable:
        setattr(module, name, nn.Parameter(feat.clone()))
    else:
        module.register_buffer(name, feat.clone(), persistent=False)


def bpr_loss(pos: Tensor, neg: Tensor) -> Tensor:
    """``-mean log sigmoid(pos - neg)`` over a batch of score pairs (B,), (B,)."""
    return -F.logsigmoid(pos - neg).mean()


def half_sq_norm_loss(*embeddings: Tensor) -> Tensor:
    """Half the sum of the squared Frobenius norms of (B, d) tensors, divided by B.

    ``(|u|^2 + |p|^2 + |n|^2) / (2 B)``: the L2 penalty that LATTICE and MGCN put on the final
    embeddings of a batch (the reference divides by its configured batch size, 2048, which
    differs from B only on the last, shorter batch of an epoch).
    """
    total = sum(e.pow(2).sum() for e in embeddings)
    return 0.5 * total / embeddings[-1].shape[0]


def emb_norm_loss(*embeddings: Tensor) -> Tensor:
    """Sum of the Frobenius norms (not squared) of (B, d) tensors, divided by B.

    This is the embedding penalty of the MMRec benchmark (its ``EmbLoss``), so the published
    ``reg_weight`` grids mean the same thing here.
    """
    total = sum(torch.linalg.vector_norm(e) for e in embeddings)
    return total / embeddings[-1].shape[0]


def info_nce(anchors: Tensor, candidates: Tensor, tau: float, targets: Tensor | None = None,
             cosine: bool = True, reduction: str = "mean") -> Tensor:
    """InfoNCE of ``anchors`` (n, d) against ``candidates`` (m, d); the positive is a candidate.

    ``-log(exp(s(a_n, c_{t_n}) / tau) / sum_j exp(s(a_n, c_j) / tau))`` per anchor, with ``s``
    the cosine (``cosine=True``) or the raw dot product, and ``t_n = targets[n]`` (default
    ``n``: in-batch, row n of the candidates is anchor n's positive). The denominator holds
    every candidate, the positive included, as in the MMRec models.

    Args:
        anchors: (n, d) anchor views.
        candidates: (m, d) candidate views (m = n for in-batch negatives).
        tau: Temperature.
        targets: (n,) long index of each anchor's positive among the candidates.
        cosine: L2-normalise both sides (eps 1e-12) before the product.
        reduction: ``"mean"`` or ``"sum"`` over the anchors.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if cosine:
        anchors, candidates = F.normalize(anchors, dim=1), F.normalize(candidates, dim=1)
    if targets is None:
        targets = torch.arange(anchors.shape[0], device=anchors.device)
    # Scaling the (n, d) anchors instead of the (n, m) logits, and taking the positives' logits
    # as row-wise dot products, keeps every (n, m) pass but the product and the logsumexp out:
    # with all users as candidates (LGMRec) m is in the tens of thousands.
    anchors = anchors / tau
    logits = anchors @ candidates.T  # (n, m)
    loss = torch.logsumexp(logits, dim=1) - (anchors * candidates[targets]).sum(1)  # (n,)
    return loss.mean() if reduction == "mean" else loss.sum()


def fused_optimizer(cls: type[torch.optim.Optimizer], params, **kwargs) -> torch.optim.Optimizer:
    """``cls(params, fused=True, **kwargs)`` where this torch and device have the fused kernel.

    The fused Adam/AdamW kernels compute the same update as the default ``foreach`` ones,
    about 9x faster on the CPU for large embedding and feature tables (perf-notes).
    """
    params = list(params)
    try:
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device or torch
        return cls(params, **kwargs)
