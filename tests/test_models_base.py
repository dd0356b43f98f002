"""Shared model helpers of rearm_dgl.models.base against plain references."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from rearm_dgl.errors import ConfigError, DataError
from rearm_dgl.models.base import (
    ModelConfig,
    add_last_batch_cache,
    add_modality_inputs,
    check_fields,
    config_kwargs,
    feature_tensors,
    info_nce,
    step_decay,
    store_last_batch,
    xavier_linear,
    xavier_parameter,
)


@pytest.mark.parametrize("cosine", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_info_nce_matches_cross_entropy(cosine, reduction):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(7, 5, generator=gen, requires_grad=True)
    c = torch.randn(11, 5, generator=gen, requires_grad=True)
    targets = torch.tensor([0, 3, 3, 10, 2, 5, 1])
    got = info_nce(a, c, 0.3, targets, cosine=cosine, reduction=reduction)
    ga, gc = torch.autograd.grad(got, (a, c))
    x, y = (F.normalize(a, dim=1), F.normalize(c, dim=1)) if cosine else (a, c)
    want = F.cross_entropy(x @ y.T / 0.3, targets, reduction=reduction)
    wa, wc = torch.autograd.grad(want, (a, c))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(ga, wa)
    torch.testing.assert_close(gc, wc)


def test_info_nce_in_batch_default_targets():
    a = torch.eye(3)
    # Row n's positive is candidate n: with identical views each row is log(sum exp) - 1/tau.
    expected = torch.logsumexp(torch.eye(3) / 0.5, 1) - 2.0
    torch.testing.assert_close(info_nce(a, a, 0.5), expected.mean())
    with pytest.raises(ValueError, match="reduction"):
        info_nce(a, a, 0.5, reduction="none")


@dataclass(frozen=True)
class _Params(ModelConfig):
    value: float = 0.5


# (rule, accepted values, refused values): the boundaries of every shared rule.
RULES = [
    (">= 1", [1, 7], [0, -1]),
    (">= 0", [0, 0.1], [-1e-9]),
    ("> 0", [1e-9, 3.0], [0, -1]),
    ("[0, 1]", [0.0, 1.0], [-0.1, 1.1]),
    ("[0, 1)", [0.0, 0.99], [1.0, -0.1]),
    ("(0, 1]", [1.0, 0.01], [0.0, 1.5]),
]


@pytest.mark.parametrize(("rule", "good", "bad"), RULES)
def test_check_fields_boundaries(rule, good, bad):
    for v in good:
        check_fields(_Params(v), "toy", {"value": rule})
    for v in bad:
        with pytest.raises(ConfigError, match=r"^toy\.value: must be"):
            check_fields(_Params(v), "toy", {"value": rule})


def test_check_fields_reports_the_first_failure_in_order():
    @dataclass(frozen=True)
    class Two(ModelConfig):
        a: int = 0
        b: int = -1

    with pytest.raises(ConfigError, match=r"^toy\.a: must be >= 1$"):
        check_fields(Two(), "toy", {"a": ">= 1", "b": ">= 0"})
    with pytest.raises(ConfigError, match=r"^toy\.b: must be >= 0$"):
        check_fields(Two(), "toy", {"b": ">= 0", "a": ">= 1"})


def test_xavier_helpers_draw_like_the_torch_initialisers():
    torch.manual_seed(3)
    got = xavier_parameter(5, 4), xavier_parameter(5, 4, normal=True)
    lin_u, lin_n = xavier_linear(6, 3), xavier_linear(6, 3, normal=True)
    torch.manual_seed(3)
    want = (torch.nn.init.xavier_uniform_(torch.empty(5, 4)),
            torch.nn.init.xavier_normal_(torch.empty(5, 4)))
    ref_u = torch.nn.Linear(6, 3)
    torch.nn.init.xavier_uniform_(ref_u.weight)
    ref_n = torch.nn.Linear(6, 3)
    torch.nn.init.xavier_normal_(ref_n.weight)
    assert isinstance(got[0], torch.nn.Parameter)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    for g, w in ((lin_u, ref_u), (lin_n, ref_n)):
        assert torch.equal(g.weight, w.weight) and torch.equal(g.bias, w.bias)


@pytest.mark.parametrize("trainable", [True, False])
def test_add_modality_inputs(trainable):
    m = torch.nn.Module()
    image, text = torch.randn(4, 6), torch.randn(4, 3)
    add_modality_inputs(m, image, text, trainable, 5)
    assert torch.equal(m.image_table, image) and torch.equal(m.text_table, text)
    assert m.image_table.data_ptr() != image.data_ptr()  # a copy, not the dataset's array
    assert isinstance(m.image_table, torch.nn.Parameter) is trainable
    assert ("image_table" in m.state_dict()) is trainable
    assert (m.image_proj.in_features, m.image_proj.out_features) == (6, 5)
    assert (m.text_proj.in_features, m.text_proj.out_features) == (3, 5)
    assert [n for n, _ in m.named_children()] == ["image_proj", "text_proj"]


def test_step_decay():
    assert step_decay(0.96, 50, 1) == 1.0
    assert step_decay(0.96, 50, 51) == pytest.approx(0.96)
    assert step_decay(0.5, 10, 21) == pytest.approx(0.25)


def test_config_kwargs_by_name_and_leave_out():
    @dataclass(frozen=True)
    class Three(ModelConfig):
        b: int = 2
        a: float = 0.5
        mode: str = "x"

    assert config_kwargs(Three()) == {"b": 2, "a": 0.5, "mode": "x"}
    assert config_kwargs(Three(a=1.5), "mode", "b") == {"a": 1.5}


def test_feature_tensors_share_memory_and_refuse_missing(tiny_data):
    image, text = feature_tensors("toy", tiny_data)
    assert image.data_ptr() == tiny_data.image_feat.ctypes.data
    assert text.shape == tiny_data.text_feat.shape

    class NoFeatures:
        has_features = False
        source = "some/folder"

    with pytest.raises(DataError, match="needs image and text features"):
        feature_tensors("toy", NoFeatures())


def test_last_batch_cache_is_saved_and_detached():
    m = torch.nn.Module()
    add_last_batch_cache(m, 3, 4, 2)
    assert not bool(m.has_cache)
    assert set(m.state_dict()) == {"cached_users", "cached_items", "has_cache"}
    users = torch.randn(3, 2, requires_grad=True)
    items = torch.randn(4, 2, requires_grad=True)
    store_last_batch(m, users * 2, items + 1)
    assert bool(m.has_cache) and not m.cached_users.requires_grad
    assert torch.equal(m.cached_users, users.detach() * 2)
    assert torch.equal(m.cached_items, items.detach() + 1)
