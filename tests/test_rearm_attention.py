"""TokenAttention against nn.MultiheadAttention(1, 1), and its dropout kernel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rearm_dgl.models.attention import (
    TokenAttention,
    _DropoutAttention,
    attention_reference,
    keep_mask,
    keep_rate,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(p: float, seed: int = 3):
    torch.manual_seed(seed)
    ours = TokenAttention(p)
    torch.manual_seed(seed)
    ref = nn.MultiheadAttention(1, 1, dropout=p, batch_first=True)
    return ours, ref


def _mha(ref, q, k, v, need_weights=False):
    """The authors' call: (N, d) -> (N, d, 1) sequences of d tokens of size 1."""
    out, _ = ref(q[:, :, None], k[:, :, None], v[:, :, None], need_weights=need_weights)
    return out[:, :, 0]


def test_parameters_and_initialisation_match_torch():
    ours, ref = _pair(0.3)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for name, value in ref.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], value, rtol=0, atol=0)


@pytest.mark.parametrize("need_weights", [False, True])
def test_eval_matches_multihead_attention(need_weights):
    ours, ref = _pair(0.4)
    with torch.no_grad():  # non-trivial biases, so every parameter matters
        for p_ours, p_ref in zip(ours.parameters(), ref.parameters()):
            p_ours.add_(0.1)
            p_ref.add_(0.1)
    ours.eval()
    ref.eval()
    torch.manual_seed(0)
    q = torch.randn(50, 16, requires_grad=True)
    kv = torch.randn(50, 16, requires_grad=True)
    out = ours(q, kv, kv)
    expected = _mha(ref, q, kv, kv, need_weights)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    # Gradients agree too.
    g_ours = torch.autograd.grad(out.square().sum(), [q, kv, *ours.parameters()])
    g_ref = torch.autograd.grad(expected.square().sum(), [q, kv, *ref.parameters()])
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_full_dropout_in_training_matches_torch():
    ours, ref = _pair(1.0)
    with torch.no_grad():
        ours.out_proj.bias.fill_(0.7)
        ref.out_proj.bias.fill_(0.7)
    ours.train()
    ref.train()
    x = torch.randn(40, 16)
    out = ours(x, x, x)
    torch.testing.assert_close(out, _mha(ref, x, x, x), rtol=0, atol=1e-7)
    torch.testing.assert_close(out, torch.full_like(x, 0.7))


def test_zero_dropout_in_training_is_the_plain_attention():
    ours, ref = _pair(0.0)
    x = torch.randn(30, 8)
    torch.testing.assert_close(ours.train()(x, x, x), _mha(ref.train(), x, x, x),
                               rtol=1e-5, atol=1e-6)


def test_keep_rate_is_one_minus_p():
    for p in (0.1, 0.2, 0.4, 0.6, 0.95):
        assert abs(keep_rate(p) - (1 - p)) <= 2.0**-17
        mask = keep_mask(123, (200, 32, 32), p)
        assert mask.dtype == torch.bool
        # 204,800 draws: the standard error of the rate is < 0.0012.
        assert abs(mask.float().mean().item() - keep_rate(p)) < 0.005
    torch.testing.assert_close(keep_mask(5, (4, 8, 8), 0.5), keep_mask(5, (4, 8, 8), 0.5))
    assert not torch.equal(keep_mask(5, (4, 8, 8), 0.5), keep_mask(6, (4, 8, 8), 0.5))


@pytest.mark.parametrize("piece", [8, 24, 1 << 18])
def test_mask_drawn_in_pieces_is_one_draw_of_the_stream(monkeypatch, piece):
    """16 bits per weight from one PCG64 stream, in order, whatever the piece size."""
    import rearm_dgl.models.attention as attention

    monkeypatch.setattr(attention, "_MASK_PIECE", piece)
    shape, p = (3, 5, 7), 0.4  # 105 weights: the last piece is partial
    raw = np.random.Generator(np.random.PCG64(9)).bit_generator.random_raw(27)
    want = torch.from_numpy(raw.view(np.uint16)[:105] >= round(p * 65536)).view(shape)
    assert torch.equal(keep_mask(9, shape, p), want)


def test_packed_decisions_unpack_at_any_bounds():
    """The kernel unpacks each chunk of nodes; with d * d not a multiple of 8 (d = 5) the
    chunks start inside a byte."""
    from rearm_dgl.models.attention import _keep_bits, _unpack

    flat = keep_mask(4, (1, 1, 301), 0.3).view(-1).to(torch.uint8)
    packed = _keep_bits(4, 301, 0.3)
    for lo, hi in [(0, 301), (25, 50), (3, 11), (296, 301), (7, 8)]:
        assert torch.equal(_unpack(packed, lo, hi), flat[lo:hi]), (lo, hi)


def test_kernel_equals_explicit_mask_and_has_exact_gradients():
    torch.manual_seed(0)
    n, d, p, seed = 6, 7, 0.4, 99
    q, k, v = (torch.randn(n, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    keep = keep_mask(seed, (n, d, d), p)
    weights = torch.softmax(q[:, :, None] * k[:, None, :], dim=2) * keep / (1 - p)
    expected = torch.bmm(weights, v[:, :, None])[:, :, 0]
    out = _DropoutAttention.apply(q, k, v, p, seed)
    torch.testing.assert_close(out, expected)
    assert torch.autograd.gradcheck(lambda a, b, c: _DropoutAttention.apply(a, b, c, p, seed),
                                    (q, k, v))


def test_kernel_handles_several_chunks(monkeypatch):
    import rearm_dgl.models.attention as attention

    monkeypatch.setattr(attention, "_CHUNK_BYTES", 4 * 5 * 5 * 3)  # 3 nodes per chunk
    torch.manual_seed(1)
    q, k, v = (torch.randn(10, 5, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda a, b, c: _DropoutAttention.apply(a, b, c, 0.3, 4),
                                    (q, k, v))


def test_training_dropout_has_the_right_expectation():
    """Averaged over masks, the dropped-out output is the full attention (and is random)."""
    torch.manual_seed(0)
    att = TokenAttention(0.5)
    x = torch.randn(4, 8)
    with torch.no_grad():
        full = att.eval()(x, x, x)
        att.train()
        draws = torch.stack([att(x, x, x) for _ in range(3000)])
    assert not torch.allclose(draws[0], draws[1])
    torch.testing.assert_close(draws.mean(0), full, rtol=0, atol=0.03)


def test_reference_dropout_path_matches_kernel_expectation():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 6), torch.randn(3, 6), torch.randn(3, 6)
    full = attention_reference(q, k, v)
    draws = torch.stack([attention_reference(q, k, v, 0.5, training=True) for _ in range(3000)])
    torch.testing.assert_close(draws.mean(0), full, rtol=0, atol=0.05)


def _force_device_path(monkeypatch, on: bool) -> None:
    """Make TokenAttention take the non-CPU (written-out) dropout path on the CPU."""
    import rearm_dgl.models.attention as attention

    monkeypatch.setattr(attention, "_chunked_kernel_applies", lambda x: not on)


def _run_path(monkeypatch, device_path: bool, p: float, x: torch.Tensor, seed: int = 5):
    """Output and gradients (x, then every parameter) of one path, seeded."""
    _force_device_path(monkeypatch, device_path)
    torch.manual_seed(0)  # the same parameters in every call
    att = TokenAttention(p).train()
    with torch.no_grad():
        for param in att.parameters():
            param.add_(0.1)
    torch.manual_seed(seed)  # the dropout draws
    xx = x.clone().requires_grad_(True)
    out = att(xx, xx, xx)
    grads = torch.autograd.grad((out * torch.linspace(-1, 1, x.shape[1])).sum(),
                                [xx, *att.parameters()], materialize_grads=True)
    return out.detach(), grads


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_device_path_equals_cpu_kernel_at_p0_and_p1(monkeypatch, p):
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(2))
    out_cpu, g_cpu = _run_path(monkeypatch, False, p, x)
    out_dev, g_dev = _run_path(monkeypatch, True, p, x)
    torch.testing.assert_close(out_dev, out_cpu, rtol=0, atol=0)
    for a, b in zip(g_dev, g_cpu):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_device_path_is_taken_when_forced(monkeypatch):
    """The forcing works: under dropout the two paths draw different masks."""
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(2))
    out_cpu, _ = _run_path(monkeypatch, False, 0.5, x)
    out_dev, _ = _run_path(monkeypatch, True, 0.5, x)
    assert not torch.allclose(out_cpu, out_dev)


@pytest.mark.parametrize("device_path", [False, True])
def test_both_paths_have_the_full_attention_in_expectation(monkeypatch, device_path):
    """Under dropout each path averages to the p = 0 output and input gradient."""
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(4))
    p, draws = 0.4, 400
    out_full, g_full = _run_path(monkeypatch, device_path, 0.0, x)
    runs = [_run_path(monkeypatch, device_path, p, x, seed=1000 + i) for i in range(draws)]
    for got, full in ((torch.stack([o for o, _ in runs]), out_full),
                      (torch.stack([g[0] for _, g in runs]), g_full[0])):
        # Within 5 standard errors of the mean, element by element.
        tol = 5 * got.std(0) / draws**0.5 + 1e-6
        assert ((got.mean(0) - full).abs() <= tol).float().mean() > 0.99
