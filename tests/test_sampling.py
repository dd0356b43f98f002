"""BPR sampler: exclusions, determinism, coverage, batch sizes, uniformity, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rearm_dgl.data.dataset import Interactions
from rearm_dgl.errors import DataError
from rearm_dgl.models.base import Batch
from rearm_dgl.sampling import BPRSampler


def make_data(n_users=30, n_items=25, seed=0, full_user=None) -> Interactions:
    """Dense random disjoint splits (exclusions matter); ``full_user`` knows every item."""
    rng = np.random.default_rng(seed)
    parts = {"train": [], "valid": [], "test": []}
    for u in range(n_users):
        if u == full_user:
            items = rng.permutation(n_items)
            sizes = (n_items - 4, 2, 2)
        else:
            items = rng.permutation(n_items)[: int(rng.integers(4, 16))]
            sizes = (items.size - 2, 1, 1)
        train, valid, test = np.split(items, np.cumsum(sizes)[:2])
        for name, its in (("train", train), ("valid", valid), ("test", test)):
            parts[name].append(np.stack([np.full(its.size, u), its]))
    arrays = {k: np.concatenate(v, axis=1).astype(np.int64) for k, v in parts.items()}
    return Interactions(name="t", source="test-data", n_users=n_users, n_items=n_items, **arrays)


def pairs_of(*splits: np.ndarray) -> set[tuple[int, int]]:
    return {(int(u), int(i)) for s in splits for u, i in s.T}


def epoch(sampler: BPRSampler, e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    batches = list(sampler.batches(e))
    return tuple(torch.cat([getattr(b, f) for b in batches]).numpy()
                 for f in ("users", "pos", "neg"))


@pytest.mark.parametrize("mode", ["all_known", "train_only"])
def test_negatives_are_never_excluded_items(mode):
    data = make_data()
    excluded = (pairs_of(data.train, data.valid, data.test) if mode == "all_known"
                else pairs_of(data.train))
    sampler = BPRSampler(data, negatives=mode, batch_size=64, seed=1)
    for e in range(5):
        users, _, neg = epoch(sampler, e)
        assert np.all((neg >= 0) & (neg < data.n_items))
        assert not {(int(u), int(i)) for u, i in zip(users, neg)} & excluded


def test_train_only_may_draw_held_out_items_and_all_known_never_does():
    data = make_data()
    held = pairs_of(data.valid, data.test)
    drawn = {mode: set() for mode in ("all_known", "train_only")}
    for mode in drawn:
        sampler = BPRSampler(data, negatives=mode, batch_size=1000, seed=0)
        for e in range(10):
            users, _, neg = epoch(sampler, e)
            drawn[mode] |= {(int(u), int(i)) for u, i in zip(users, neg)}
    assert drawn["train_only"] & held
    assert not drawn["all_known"] & held


def test_same_seed_and_epoch_give_identical_batches():
    data = make_data()
    a = BPRSampler(data, batch_size=50, seed=7)
    b = BPRSampler(data, batch_size=50, seed=7)
    for _ in a.batches(0):  # drawing earlier epochs must not matter (resume)
        pass
    for x, y in zip(a.batches(3), b.batches(3), strict=True):
        assert torch.equal(x.users, y.users) and torch.equal(x.pos, y.pos)
        assert torch.equal(x.neg, y.neg)


def test_different_epochs_and_seeds_differ():
    data = make_data()
    s = BPRSampler(data, batch_size=50, seed=7)
    e0, e1 = epoch(s, 0), epoch(s, 1)
    other = epoch(BPRSampler(data, batch_size=50, seed=8), 0)
    assert not np.array_equal(e0[0], e1[0])
    assert not np.array_equal(e0[2], e1[2])
    assert not np.array_equal(e0[0], other[0])


def test_every_positive_appears_once_per_epoch():
    data = make_data()
    sampler = BPRSampler(data, batch_size=37, seed=3)
    for e in range(3):
        users, pos, _ = epoch(sampler, e)
        got = np.stack([users, pos])
        assert got.shape == data.train.shape
        want = data.train[:, np.lexsort(data.train[::-1])]
        np.testing.assert_array_equal(got[:, np.lexsort(got[::-1])], want)


@pytest.mark.parametrize("batch_size", [1, 37, 100, 10_000])
def test_batch_sizes_and_len(batch_size):
    data = make_data()
    n = data.train.shape[1]
    sampler = BPRSampler(data, batch_size=batch_size, seed=0)
    batches = list(sampler.batches(0))
    assert len(sampler) == len(batches) == -(-n // batch_size)
    sizes = [b.users.numel() for b in batches]
    assert sizes[:-1] == [batch_size] * (len(sizes) - 1)
    assert sizes[-1] == n - batch_size * (len(sizes) - 1)  # the partial batch is kept
    b = batches[0]
    assert isinstance(b, Batch) and b.users.dtype == b.pos.dtype == b.neg.dtype == torch.int64
    assert b.users.shape == b.pos.shape == b.neg.shape


def test_negatives_are_uniform_over_allowed_items():
    data = make_data(n_users=3, n_items=25, seed=4)
    sampler = BPRSampler(data, negatives="all_known", batch_size=10, seed=0)
    known = data.known_csr[1].indices
    allowed = np.setdiff1d(np.arange(data.n_items), known)
    draws = sampler.sample_negatives(np.full(40_000, 1), np.random.default_rng(0))
    counts = np.bincount(draws, minlength=data.n_items)
    assert set(np.flatnonzero(counts)) == set(allowed.tolist())  # every allowed item, only them
    expected = draws.size / allowed.size
    chi2 = float(((counts[allowed] - expected) ** 2 / expected).sum())
    # dof <= 23; the 0.9999 quantile of chi-square with 23 dof is about 56.
    assert chi2 < 56, chi2


def test_train_only_draws_only_items_of_the_training_split():
    """MMRec's sampler picks from the training split's items: items 8 and 9, which occur only
    in valid or test, are never drawn; the others are drawn uniformly."""
    train = np.array([[0, 0, 0, 1, 1, 2, 2, 2, 2], [0, 1, 2, 3, 4, 5, 6, 7, 0]])
    valid = np.array([[0, 1, 2], [8, 7, 9]])
    test = np.array([[0, 1, 2], [9, 8, 1]])
    data = Interactions(name="t", source="test-data", n_users=3, n_items=10, train=train,
                        valid=valid, test=test)
    sampler = BPRSampler(data, negatives="train_only", batch_size=10, seed=0)
    rng = np.random.default_rng(0)
    for user in range(3):
        draws = sampler.sample_negatives(np.full(20_000, user), rng)
        allowed = np.setdiff1d(np.arange(8), train[1][train[0] == user])
        counts = np.bincount(draws, minlength=data.n_items)
        assert set(np.flatnonzero(counts)) == set(allowed.tolist())
        expected = draws.size / allowed.size
        chi2 = float(((counts[allowed] - expected) ** 2 / expected).sum())
        assert chi2 < 30, chi2  # dof <= 6; the 0.9999 quantile is about 27.9
    # A user who trained on every training item has nothing left, although items 8, 9 exist.
    full = Interactions(name="t", source="test-data", n_users=2, n_items=4,
                        train=np.array([[0, 0, 1], [0, 1, 0]]), valid=np.array([[0], [2]]),
                        test=np.array([[1], [3]]))
    with pytest.raises(DataError, match=r"user\(s\) 0 .*all 2 items of the training split"):
        BPRSampler(full, negatives="train_only")


def test_user_with_no_allowed_negative_is_a_clear_error():
    data = make_data(full_user=5)
    with pytest.raises(DataError, match=r"(?s)user\(s\) 5 .*all 25 items.*train_only"):
        BPRSampler(data, negatives="all_known")
    # Excluding training items only leaves the held-out items to draw from.
    sampler = BPRSampler(data, negatives="train_only", batch_size=1000, seed=0)
    users, _, neg = epoch(sampler, 0)
    allowed_5 = set(data.valid[1][data.valid[0] == 5]) | set(data.test[1][data.test[0] == 5])
    assert set(neg[users == 5].tolist()) <= allowed_5 & set(data.train[1].tolist())


def test_bad_arguments():
    data = make_data()
    with pytest.raises(ValueError, match="negatives"):
        BPRSampler(data, negatives="everything")
    with pytest.raises(ValueError, match="batch_size"):
        BPRSampler(data, batch_size=0)


class _CopyRecorder(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the operators that move a tensor to another device."""

    def __init__(self):
        super().__init__()
        self.copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        src = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if (func.overloadpacket.__name__ in ("_to_copy", "copy_") and src is not None
                and isinstance(out, torch.Tensor) and out.device != src.device):
            self.copies += 1
        return out


@pytest.mark.parametrize("batch_size", [7, 1000])
def test_an_epoch_reaches_the_device_in_one_copy(batch_size):
    """One transfer per epoch however many batches: a copy per batch would make the host
    wait for the device before each batch. (The meta device stands in for a GPU.)"""
    sampler = BPRSampler(make_data(), "all_known", batch_size=batch_size, seed=3)
    with _CopyRecorder() as rec:
        batches = list(sampler.batches(2, "meta"))
    assert len(batches) == len(sampler) and (len(batches) > 10 or batch_size == 1000)
    assert rec.copies == 1
    assert all(t.device.type == "meta" for b in batches for t in (b.users, b.pos, b.neg))
    cpu = list(sampler.batches(2))
    assert [b.users.shape for b in batches] == [b.users.shape for b in cpu]
    assert all(t.device.type == "cpu" for b in cpu for t in (b.users, b.pos, b.neg))
