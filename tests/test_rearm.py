"""REARM model: shapes, named losses, gradient flow, ablation switches, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from rearm_dgl.config import GraphConfig
from rearm_dgl.data.dataset import Interactions
from rearm_dgl.errors import ConfigError, DataError
from rearm_dgl.graphs.build import build_graph
from rearm_dgl.models import registry
from rearm_dgl.models.base import Batch
from rearm_dgl.models.rearm import REARM, REARMConfig

N_USERS, N_ITEMS, D = 30, 20, 8


pytestmark = pytest.mark.usefixtures("one_thread")

# Every relation weight strictly inside (0, 1), so each graph switch has something to remove.
BASE = REARMConfig(embedding_size=D, n_layers=2, n_uu_layers=1, n_ii_layers=1, rank=2,
                   s_drop=0.4, m_drop=0.6, u_mm_image_weight=0.3, i_mm_image_weight=0.6,
                   uu_co_weight=0.4, ii_co_weight=0.3, cl_tmp=0.5, cl_loss_weight=0.1,
                   diff_loss_weight=0.1, reg_weight=1e-3)


def _tiny_data(features: bool = True) -> Interactions:
    rng = np.random.default_rng(0)
    pairs = set()
    for u in range(N_USERS):
        for i in rng.choice(N_ITEMS, 6, replace=False):
            pairs.add((u, int(i)))
    for i in range(N_ITEMS):  # every item has a training user
        pairs.add((i % N_USERS, i))
    pairs = np.array(sorted(pairs), dtype=np.int64).T
    order = rng.permutation(pairs.shape[1])
    held = order[:N_USERS]
    mask = np.ones(pairs.shape[1], bool)
    mask[held] = False
    train = pairs[:, mask]
    keep = np.isin(pairs[0, held], train[0])
    valid = pairs[:, held[keep]]
    image = np.abs(rng.normal(size=(N_ITEMS, 16))).astype(np.float32) if features else None
    text = rng.normal(size=(N_ITEMS, 8)).astype(np.float32) if features else None
    return Interactions(name="tiny", source="test", n_users=N_USERS, n_items=N_ITEMS,
                        train=train, valid=valid, test=valid, image_feat=image, text_feat=text)


@pytest.fixture(scope="module")
def data():
    return _tiny_data()


@pytest.fixture(scope="module")
def graph(data):
    return build_graph(data, GraphConfig(user_knn_k=4, item_knn_k=3))


def _batch(data, seed=0, size=24) -> Batch:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, data.train.shape[1], (size,), generator=g)
    users = torch.from_numpy(data.train[0])[idx]
    return Batch(users, torch.from_numpy(data.train[1])[idx],
                 torch.randint(0, N_ITEMS, (size,), generator=g))


def _model(data, graph, seed=0, **changes) -> REARM:
    torch.manual_seed(seed)
    return REARM.build(dataclasses.replace(BASE, **changes), data, graph, torch.device("cpu"))


def test_registered_with_contract():
    cls = registry.get("rearm")
    assert cls is REARM
    assert cls.config_cls is REARMConfig and cls.needs_features
    assert cls.loss_parts == ("bpr", "cl", "orth")


def test_shapes_and_named_finite_loss(data, graph):
    model = _model(data, graph)
    out = model.loss(_batch(data))
    assert set(out.parts) == set(REARM.loss_parts)
    assert torch.isfinite(out.total) and out.total.dim() == 0
    assert all(torch.isfinite(v) and not v.requires_grad for v in out.parts.values())
    torch.testing.assert_close(out.total.detach(), sum(out.parts.values()))
    model.eval()
    users, items = model.embeddings()
    assert users.shape == (N_USERS, 3 * D) and items.shape == (N_ITEMS, 3 * D)
    scores = model.score(torch.tensor([0, 3]), users, items)
    assert scores.shape == (2, N_ITEMS)


def test_feature_tables_initialised_from_data(data, graph):
    from rearm_dgl.graphs.knn import user_interest_features

    model = _model(data, graph)
    np.testing.assert_array_equal(model.item_image.detach().numpy(), data.image_feat)
    np.testing.assert_allclose(model.user_text.detach().numpy(),
                               user_interest_features(data.train_csr, data.text_feat), rtol=1e-6)
    assert abs(model.user_id.detach().std().item() - 0.1) < 0.03


def _grads(model, batch):
    model.train()
    model.zero_grad(set_to_none=True)
    model.loss(batch).total.backward()
    return {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("train_meta", [False, True])
def test_gradient_reaches_every_trainable_parameter(data, graph, train_meta):
    model = _model(data, graph, train_meta=train_meta)
    grads = _grads(model, _batch(data))
    for name, g in grads.items():
        is_meta = name.startswith(("meta_u.", "meta_i."))
        if is_meta and not train_meta:
            assert g is None, f"{name} must not train unless train_meta"
        elif name.endswith("out_proj.bias"):
            # It shifts all d dims alike and LayerNorm follows, so its gradient is 0 (up to
            # rounding) in REARM itself; it must still be connected.
            assert g is not None and g.abs().max() < 1e-5
        else:
            assert g is not None and g.abs().sum() > 0, f"no gradient reaches {name}"


def test_optimizer_is_adamw_with_weight_decay(data, graph):
    model = _model(data, graph)
    opt = model.configure_optimizer(1e-3)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["weight_decay"] == BASE.reg_weight
    n_opt = sum(p.numel() for group in opt.param_groups for p in group["params"])
    assert n_opt == sum(p.numel() for p in model.parameters())


def _eval_outputs(model, batch):
    model.eval()
    with torch.no_grad():
        users, items = model.embeddings()
        parts = model.loss(batch).parts
    return users, items, parts


SWITCHES = ["use_share", "use_orth", "use_cl", "use_user_co", "use_item_co",
            "use_user_interest", "use_item_semantic", "use_homography", "use_attention",
            "use_layernorm"]


@pytest.mark.parametrize("switch", SWITCHES)
def test_each_ablation_changes_the_computation(data, graph, switch):
    batch = _batch(data)
    users, items, parts = _eval_outputs(_model(data, graph), batch)
    a_users, a_items, a_parts = _eval_outputs(_model(data, graph, **{switch: False}), batch)
    if switch in ("use_orth", "use_cl"):
        part = "orth" if switch == "use_orth" else "cl"
        assert parts[part] > 0 and a_parts[part] == 0
        torch.testing.assert_close(a_parts["bpr"], parts["bpr"])
    else:
        assert not torch.allclose(users, a_users) or not torch.allclose(items, a_items)


def test_ablation_details(data, graph):
    no_homo = _model(data, graph, use_homography=False)
    assert no_homo.user_prop is None and no_homo.item_prop is None
    no_co = _model(data, graph, use_user_co=False)
    assert all(rel[1] != "co_user" for rel, _ in no_co.user_prop.relations)
    no_interest = _model(data, graph, use_user_interest=False)
    assert [rel[1] for rel, _ in no_interest.user_prop.relations] == ["co_user"]
    # Without the share branch the third block is H itself.
    model = _model(data, graph, use_share=False)
    model.eval()
    with torch.no_grad():
        users, _ = model.embeddings()
        h = model._forward().ids["user"]
    torch.testing.assert_close(users[:, 2 * D:], h)


def test_both_user_graphs_off_is_a_config_error():
    with pytest.raises(ConfigError, match="use_homography"):
        REARMConfig(use_user_co=False, use_user_interest=False)
    with pytest.raises(ConfigError, match="s_drop"):
        REARMConfig(s_drop=1.5)


def test_missing_features_is_a_clear_error(graph):
    with pytest.raises(DataError, match="image and text features"):
        REARM.build(BASE, _tiny_data(features=False), graph, torch.device("cpu"))


def test_full_self_dropout_trains_on_bias_and_evaluates_fully(data, graph):
    """s_drop = 1: in training each self-attention gives its out-projection bias."""
    model = _model(data, graph, s_drop=1.0)
    model.train()
    x = torch.randn(N_ITEMS, D)
    out = model.self_attn_image(x, x, x)
    torch.testing.assert_close(out, model.self_attn_image.out_proj.bias.expand(N_ITEMS, D))
    model.eval()
    assert not torch.allclose(model.self_attn_image(x, x, x), out)
    # Zero (not missing) gradients for the dropped attention's projections, as torch gives.
    grads = _grads(model, _batch(data))
    assert grads["self_attn_image.in_proj_weight"] is not None
    assert grads["self_attn_image.in_proj_weight"].abs().sum() == 0
    assert grads["self_attn_image.out_proj.bias"] is not None


def test_same_seed_same_forward_and_gradients(data, graph):
    batch = _batch(data)
    losses, grads = [], []
    for _ in range(2):
        model = _model(data, graph, seed=7)
        torch.manual_seed(11)  # dropout masks come from torch's generator
        model.train()
        out = model.loss(batch)
        out.total.backward()
        losses.append(out.total.detach())
        grads.append(model.item_image.grad.clone())
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_training_dropout_is_random_and_eval_is_not(data, graph):
    model = _model(data, graph)
    batch = _batch(data)
    model.train()
    with torch.no_grad():
        a, b = model.loss(batch).total, model.loss(batch).total
    assert a != b
    model.eval()
    with torch.no_grad():
        a, b = model.loss(batch).total, model.loss(batch).total
    assert a == b


def test_loss_decreases_with_training(data, graph):
    # Without the auxiliary losses (their weights are large here) BPR must fall fast.
    model = _model(data, graph, s_drop=0.0, m_drop=0.0, cl_loss_weight=0.0,
                   diff_loss_weight=0.0)
    opt = model.configure_optimizer(1e-2)
    batch = _batch(data, size=64)
    model.train()
    bpr = []
    for _ in range(20):
        out = model.loss(batch)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        bpr.append(out.parts["bpr"].item())
    assert bpr[-1] < 0.8 * bpr[0]


def _blocks(model, x: torch.Tensor) -> list[torch.Tensor]:
    """The four item blocks of the forward pass applied to ``iv = it = x``."""
    iv = model._block(model.self_attn_image, x, x)
    it = model._block(model.self_attn_text, x, x)
    return [iv, it, model._block(model.mutual_attn_t2v, it, iv),
            model._block(model.mutual_attn_v2t, iv, it)]


def test_without_attention_each_block_is_prelu_of_layernorm(data, graph):
    model = _model(data, graph, use_attention=False)
    model.train()  # dropout would show if any attention were still applied
    x = torch.randn(N_ITEMS, D)
    iv, it, t2v, v2t = _blocks(model, x)
    expected = model.act(model.norm(x))
    torch.testing.assert_close(iv, expected)
    torch.testing.assert_close(it, expected)
    torch.testing.assert_close(t2v, model.act(model.norm(expected)))
    torch.testing.assert_close(v2t, model.act(model.norm(expected)))


def test_without_layernorm_each_block_keeps_the_attention(data, graph):
    model = _model(data, graph, use_layernorm=False)
    model.eval()
    x = torch.randn(N_ITEMS, D)
    attn = model.self_attn_image
    torch.testing.assert_close(_blocks(model, x)[0], model.act(x + attn(x, x, x)))
    both = _model(data, graph, use_layernorm=False, use_attention=False)
    torch.testing.assert_close(_blocks(both, x)[0], both.act(x))


def test_layernorm_switch_changes_the_computation(data, graph):
    full, no_ln = _model(data, graph), _model(data, graph, use_layernorm=False)
    full.eval()
    no_ln.eval()
    with torch.no_grad():
        assert not torch.allclose(full.embeddings()[1], no_ln.embeddings()[1])
    assert REARMConfig().use_layernorm  # on by default, as in the paper


def test_full_self_dropout_blocks_are_a_no_op_in_training(data, graph):
    """With s_drop = 1 the self-attention adds only its bias, which LayerNorm removes."""
    full = _model(data, graph, s_drop=1.0)
    no_attn = _model(data, graph, s_drop=1.0, use_attention=False)
    no_attn.load_state_dict(full.state_dict())
    full.train()
    no_attn.train()
    with torch.no_grad():
        full.self_attn_image.out_proj.bias.fill_(0.7)  # a bias that would show without LN
        no_attn.self_attn_image.out_proj.bias.fill_(0.7)
    x = torch.randn(N_ITEMS, D)
    torch.testing.assert_close(full._block(full.self_attn_image, x, x),
                               no_attn._block(no_attn.self_attn_image, x, x))


@pytest.mark.parametrize("sync_free", [False, True])
def test_info_nce_over_distinct_ids_equals_the_unique_rows(monkeypatch, sync_free):
    """Both forms (rows dropped, rows masked) give InfoNCE over torch.unique's rows."""
    import rearm_dgl.models.rearm as rearm_mod
    from rearm_dgl.models.rearm import _first_occurrence, _info_nce

    monkeypatch.setattr(rearm_mod, "_sync_free", lambda x: sync_free)

    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 15, (40,), generator=g)
    table_a = torch.randn(15, 6, generator=g, dtype=torch.float64, requires_grad=True)
    table_b = torch.randn(15, 6, generator=g, dtype=torch.float64, requires_grad=True)
    got = _info_nce(table_a[ids], table_b[ids], 0.7, ids)
    uniq = torch.unique(ids)
    logits = (torch.nn.functional.normalize(table_a[uniq], dim=1)
              @ torch.nn.functional.normalize(table_b[uniq], dim=1).T / 0.7)
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(uniq.shape[0]))
    torch.testing.assert_close(got, expected)
    for x, y in zip(torch.autograd.grad(got, [table_a, table_b]),
                    torch.autograd.grad(expected, [table_a, table_b])):
        torch.testing.assert_close(x, y)
    first = _first_occurrence(ids)
    assert first.sum() == uniq.numel()
    assert all(int(ids[i]) not in ids[:i].tolist() for i in first.nonzero()[:, 0])


def test_info_nce_backward_runs_once_per_forward():
    """Its backward turns the saved softmax into the gradient in place; a second backward
    through the same graph is an error, not a wrong gradient."""
    from rearm_dgl.models.rearm import _info_nce

    ids = torch.arange(5)
    a = torch.randn(5, 4, requires_grad=True)
    loss = _info_nce(a, torch.randn(5, 4), 0.5, ids)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="runs once per forward"):
        loss.backward()


def test_reuse_freed_memory_is_set_by_a_cpu_build(data, graph, monkeypatch):
    import rearm_dgl.models.rearm as rearm_mod

    calls = []
    monkeypatch.setattr(rearm_mod, "reuse_freed_memory", lambda: calls.append(1) or True)
    _model(data, graph)
    assert calls == [1]
    # Not where the training state (4x the parameters) exceeds a quarter of the memory.
    n_bytes = 4 * sum(p.numel() * 4 for p in _model(data, graph).parameters())
    calls.clear()
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": (4 * n_bytes - 1) // 4096}
    monkeypatch.setattr(rearm_mod.os, "sysconf", lambda name: pages[name])
    _model(data, graph)
    assert calls == []
    # On glibc (this project's Linux machines) the setting takes.
    monkeypatch.undo()
    assert rearm_mod.reuse_freed_memory() in (True, False)
