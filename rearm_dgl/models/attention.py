"""Attention over the d dimensions of each node, as REARM uses it (spec section 2).

REARM applies ``nn.MultiheadAttention(embed_dim=1, num_heads=1)`` to every node's
d-dimensional vector as a sequence of d tokens of size 1. :class:`TokenAttention` computes the
same thing with the same parameters, faster:

- **Eval mode, or dropout 0:** ``F.scaled_dot_product_attention`` (the fused kernel).
- **Training with 0 < p < 1 on the CPU:** a chunked kernel with a hand-written backward
  (:class:`_DropoutAttention`). The attention-weight dropout keeps each weight with
  probability 1 - p and scales kept weights by 1 / (1 - p), as ``F.dropout`` does; only the
  source of the random bits differs (16-bit integers from numpy's PCG64, seeded from torch's
  generator, instead of float ``torch.rand``). Of the (d x d) per node only the keep
  decisions are stored for the backward, packed one bit per weight; scores are recomputed
  chunk by chunk, so the working set stays in cache.
- **Training with 0 < p < 1 on other devices:** the written-out attention with ``F.dropout``.
- **Training with p = 1:** every attention weight is dropped, so the output is the
  out-projection bias, as with ``nn.MultiheadAttention``. The in- and out-projection weights
  still get (zero) gradients, as they do there, so weight decay treats them alike.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TokenAttention", "attention_reference", "keep_mask", "keep_rate"]

# Random bits per attention weight. 16 bits put the keep rate within 2^-17 of 1 - p.
_MASK_BITS = 16
_MASK_LEVELS = 1 << _MASK_BITS
# Nodes per chunk are chosen so that one (chunk, d, d) float32 block is about this many bytes,
# small enough to stay in a core's L2 cache between the passes over it (forward + backward
# of one Baby block, 1 thread: 0.13 s at 1 MiB against 0.18 s at 4 MiB and 0.41 s at 64 MiB).
_CHUNK_BYTES = 1 << 20
# Weights per piece of the mask drawn at once (a multiple of the 4 per 64-bit draw and of the
# 8 per packed byte).
_MASK_PIECE = 1 << 18


def _drop_threshold(p: float) -> int:
    """Integer threshold t: a weight is dropped where its 16-bit random value is < t."""
    return int(round(p * _MASK_LEVELS))


def keep_rate(p: float) -> float:
    """The exact keep probability of the CPU dropout kernel for dropout probability ``p``."""
    return 1.0 - _drop_threshold(p) / _MASK_LEVELS


def _keep_bits(seed: int, n: int, p: float) -> np.ndarray:
    """The keep decisions of ``n`` weights for ``seed``, packed 8 to a byte (``np.packbits``).

    Each weight gets 16 uniform random bits (raw PCG64 output, the cheapest source numpy
    has: about 10x cheaper than ``torch.rand``) and is kept where they are >= t. The bits are
    drawn, compared and packed in pieces of ``_MASK_PIECE`` weights, the same stream as one
    draw for all (a test checks it), so no full-size temporaries are made. Packed, the mask
    the backward keeps is an eighth of a byte per weight: Baby's four (7,050 x 64 x 64)
    masks hold 14 MB instead of 116 MB.
    """
    packed = np.empty(-(-n // 8), dtype=np.uint8)
    bits = np.random.PCG64(seed)
    threshold = _drop_threshold(p)
    for a in range(0, n, _MASK_PIECE):
        b = min(n, a + _MASK_PIECE)
        raw = bits.random_raw(-(-(b - a) // 4))  # 4 weights per 64-bit draw
        packed[a // 8:-(-b // 8)] = np.packbits(raw.view(np.uint16)[:b - a] >= threshold)
    return packed


def _unpack(packed: np.ndarray, lo: int, hi: int) -> Tensor:
    """Keep decisions ``lo:hi`` as a uint8 (0/1) tensor."""
    start = lo // 8
    out = np.unpackbits(packed[start:-(-hi // 8)], count=hi - start * 8)
    return torch.from_numpy(out[lo - start * 8:])


def keep_mask(seed: int, shape: tuple[int, ...], p: float) -> Tensor:
    """Bool mask of the weights that the CPU kernel keeps, for ``seed`` (CPU tensor)."""
    n = math.prod(shape)
    return _unpack(_keep_bits(seed, n, p), 0, n).view(torch.bool).view(shape)


def _row_max(q: Tensor, k: Tensor) -> Tensor:
    """max_j q_i k_j for each token i, without forming the (d, d) scores: (N, d)."""
    kmax = k.amax(dim=1, keepdim=True)
    kmin = k.amin(dim=1, keepdim=True)
    return torch.where(q >= 0, q * kmax, q * kmin)


def _score_factors(q: Tensor, k: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """``(N, d, 2)`` rows ``[q_i, -m_i]`` and ``(N, 2, d)`` columns ``[k_j; 1]``.

    Their product is ``q_i k_j - m_i``: one batched product with an inner size of 2 makes the
    shifted scores, where ``baddbmm(-m, q, k)`` first copies the broadcast shift into the
    whole (c, d, d) result (Baby, one block's scores and exp, 2 threads: 4.9 against 7.0 ms).
    """
    return torch.stack([q, -m], dim=2), torch.stack([k, torch.ones_like(k)], dim=1)


def _scores_exp(rows: Tensor, cols: Tensor) -> Tensor:
    """exp(q_i k_j - m_i) for a chunk of nodes, from :func:`_score_factors`: (c, d, d)."""
    return torch.bmm(rows, cols).exp_()


def _rows_times(e: Tensor, x: Tensor, out: Tensor) -> None:
    """``out[n, i] = sum_j e[n, i, j] x[n, j]``: (c, d). (A row-vector bmm against e^T: the
    fast layout.) ``out`` is a block of rows of a contiguous tensor, written in place."""
    torch.bmm(x[:, None, :], e.transpose(1, 2), out=out[:, None, :])


def _chunk_mask(keep: np.ndarray, a: int, b: int, d: int) -> Tensor:
    """Nodes ``a:b``'s keep decisions as a (b - a, d, d) uint8 tensor (multiplying by uint8
    is about 5x faster than by bool)."""
    return _unpack(keep, a * d * d, b * d * d).view(b - a, d, d)


class _DropoutAttention(torch.autograd.Function):
    """``o = dropout(softmax(q k^T)) v`` per node, for token size 1, in chunks of nodes.

    With ``E = exp(q k^T - m)``, ``Z = rowsum(E)``, ``P = E / Z`` and the scaled kept mask
    ``K = keep / (1 - p)``: ``o = (P * K) v``. The backward uses, per node,

        g_v = (P*K)^T g
        g_q = g * ((P*K) (v*k) - o * (P k))
        g_k = v * (P*K)^T (q*g) - P^T (q*g*o)

    so it needs only matrix-vector products with ``P`` and ``P*K``. Only the keep decisions
    (N x d x d bits) are kept for the backward; ``E`` is recomputed chunk by chunk.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, p: float, seed: int) -> Tensor:
        n, d = q.shape
        keep = _keep_bits(seed, n * d * d, p)
        scale = 1.0 / (1.0 - p)
        m = _row_max(q, k)
        qm, k1 = _score_factors(q, k, m)
        z = torch.empty_like(q)
        o = torch.empty_like(q)
        rows = max(1, _CHUNK_BYTES // (4 * d * d))
        for a in range(0, n, rows):
            b = min(n, a + rows)
            e = _scores_exp(qm[a:b], k1[a:b])
            torch.sum(e, dim=2, out=z[a:b])
            e.mul_(_chunk_mask(keep, a, b, d))
            _rows_times(e, v[a:b], o[a:b])
        o.mul_(scale).div_(z)
        ctx.save_for_backward(q, k, v, m, z, o)
        ctx.keep = keep
        ctx.scale = scale
        return o

    @staticmethod
    def backward(ctx, g: Tensor):
        q, k, v, m, z, o = ctx.saved_tensors
        keep = ctx.keep
        n, d = q.shape
        scale = ctx.scale
        g = g.contiguous()
        inv_z = 1.0 / z
        qg = q * g
        right_p = qg * o * inv_z                                        # for P^T (q g o)
        right_pk = torch.stack([g, qg], dim=1) * (scale * inv_z)[:, None, :]  # (N, 2, d)
        vk = v * k
        pk = torch.empty_like(q)                                       # P k (times Z)
        pt_qgo = torch.empty_like(q)                                   # P^T (q g o)
        pdvk = torch.empty_like(q)                                     # (P*K) (v k), unscaled
        pdt = torch.empty(n, 2, d, dtype=q.dtype, device=q.device)    # (P*K)^T [g, q g]
        qm, k1 = _score_factors(q, k, m)
        rows = max(1, _CHUNK_BYTES // (4 * d * d))
        for a in range(0, n, rows):
            b = min(n, a + rows)
            e = _scores_exp(qm[a:b], k1[a:b])
            _rows_times(e, k[a:b], pk[a:b])
            torch.bmm(right_p[a:b, None, :], e, out=pt_qgo[a:b, None, :])
            e.mul_(_chunk_mask(keep, a, b, d))
            _rows_times(e, vk[a:b], pdvk[a:b])
            torch.bmm(right_pk[a:b], e, out=pdt[a:b])
        pk.mul_(inv_z)
        pdvk.mul_(inv_z).mul_(scale)
        grad_q = g * (pdvk - o * pk)
        grad_k = v * pdt[:, 1] - pt_qgo
        grad_v = pdt[:, 0]
        return grad_q, grad_k, grad_v, None, None


def attention_reference(q: Tensor, k: Tensor, v: Tensor, p: float = 0.0,
                        training: bool = False) -> Tensor:
    """Written-out attention for token size 1: softmax over keys, ``F.dropout``, weighted sum.

    Args:
        q, k, v: (N, d) in-projected queries, keys and values.
        p: Attention-weight dropout probability.
        training: Apply the dropout.

    Returns:
        (N, d) attention output before the out-projection.
    """
    weights = torch.softmax(q[:, :, None] * k[:, None, :], dim=2)  # (N, d, d)
    weights = F.dropout(weights, p=p, training=training)
    return torch.bmm(weights, v[:, :, None]).squeeze(2)


def _chunked_kernel_applies(x: Tensor) -> bool:
    """Whether training dropout runs the chunked CPU kernel; else the written-out path.

    On a GPU the written-out path (``F.dropout`` on the (N, d, d) weights) is one
    device-side draw with no host sync; the CPU kernel draws its seed on the host.
    """
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


class TokenAttention(nn.Module):
    """``nn.MultiheadAttention(embed_dim=1, num_heads=1)`` over the d dims of each node.

    The parameters have the names, shapes and initialisation of ``nn.MultiheadAttention(1, 1)``
    (``in_proj_weight`` (3, 1), ``in_proj_bias`` (3,), ``out_proj.weight`` (1, 1),
    ``out_proj.bias`` (1,)), so state dicts load either way. The call takes and returns
    (N, d) tensors: row n is one sequence of d tokens of size 1.

    Args:
        dropout: Attention-weight dropout probability p, in [0, 1].
    """

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}")
        self.dropout = float(dropout)
        self.in_proj_weight = nn.Parameter(torch.empty(3, 1))
        self.in_proj_bias = nn.Parameter(torch.empty(3))
        # Same draw order as nn.MultiheadAttention: out_proj's own init, then in_proj.
        self.out_proj = nn.Linear(1, 1)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}"

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        """Attend from ``query`` tokens to ``key``/``value`` tokens, per node.

        Args:
            query, key, value: (N, d).

        Returns:
            (N, d), the out-projected attention output.
        """
        w = self.in_proj_weight[:, 0]
        b = self.in_proj_bias
        p = self.dropout if self.training else 0.0
        out_w = self.out_proj.weight[0, 0]
        out_b = self.out_proj.bias[0]
        if p >= 1.0:
            # All weights dropped: the attention output is zero, so only the bias remains.
            # The zero-valued term keeps the (zero) gradients of the other parameters.
            zero = (w.sum() + b.sum() + out_w) * 0.0
            return (out_b + zero).expand(query.shape[0], query.shape[1])
        q = query * w[0] + b[0]
        k = key * w[1] + b[1]
        v = value * w[2] + b[2]
        if p == 0.0:
            # Fused kernel; scale 1 = 1/sqrt(head_dim).
            o = F.scaled_dot_product_attention(q[:, None, :, None], k[:, None, :, None],
                                               v[:, None, :, None])[:, 0, :, 0]
        elif _chunked_kernel_applies(q):
            seed = int(torch.randint(0, 2**62, (1,)).item())
            o = _DropoutAttention.apply(q.contiguous(), k.contiguous(), v.contiguous(), p, seed)
        else:
            o = attention_reference(q, k, v, p, training=True)
        return o * out_w + out_b


