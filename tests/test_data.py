"""Loader (both layouts, features, cache folder, fingerprint), drop-and-warn, the demo."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import rearm_dgl.data as data_mod
from rearm_dgl.cli import main
from rearm_dgl.config import DataConfig
from rearm_dgl.data import load_dataset, load_demo
from rearm_dgl.data import synthetic as syn
from rearm_dgl.data.io import write_mmrec
from rearm_dgl.errors import DataError


def _pairs(*rows) -> np.ndarray:
    return np.array(rows, dtype=np.int64).T.copy()


TRAIN = _pairs((0, 0), (0, 1), (1, 1), (1, 2), (2, 2), (2, 3), (4, 0), (4, 4))
VALID = _pairs((0, 2), (1, 3), (2, 4))
TEST = _pairs((0, 3), (1, 4), (4, 1))
SPLITS = {"train": TRAIN, "valid": VALID, "test": TEST}


def _write_npy(d: Path, splits=SPLITS, feats=True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, arr in splits.items():
        np.save(d / f"{name}.npy", arr)
    if feats:
        rng = np.random.default_rng(1)
        np.save(d / "image_feat.npy", rng.random((5, 6)))  # float64 on disk on purpose
        np.save(d / "text_feat.npy", rng.standard_normal((5, 3)).astype(np.float32))
    return d


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "user_cache"
    monkeypatch.setenv("REARM_DGL_CACHE", str(root))
    monkeypatch.delenv("REARM_DGL_DATA", raising=False)
    return root


def test_npy_layout(tmp_path, cache):
    d = _write_npy(tmp_path / "toy")
    ds = load_dataset(DataConfig(dataset=str(d)))
    assert (ds.name, ds.n_users, ds.n_items) == ("toy", 5, 5)  # user 3 has no rows: cold
    for s in SPLITS:
        np.testing.assert_array_equal(ds.split(s), SPLITS[s])
        assert ds.split(s).dtype == np.int64
    assert ds.image_feat.dtype == np.float32 and ds.image_feat.shape == (5, 6)
    assert ds.features_note == ""
    assert ds.cold_users.tolist() == [3]
    assert ds.train_csr.shape == (5, 5) and ds.train_csr.nnz == TRAIN.shape[1]
    assert ds.cache_dir == d / "_cache"


def test_inter_layout_matches_npy(tmp_path, cache):
    a = _write_npy(tmp_path / "a", feats=False)
    b = tmp_path / "b"
    b.mkdir()
    # optional columns, another column order, a float rating: all accepted
    rows = ["itemID\tuserID\trating\ttimestamp\tx_label"]
    for code, s in enumerate(("train", "valid", "test")):
        rows += [f"{i}\t{u}\t4.0\t1300000000\t{code}" for u, i in SPLITS[s].T]
    (b / "b.inter").write_text("\n".join(rows) + "\n")
    da, db = (load_dataset(DataConfig(dataset=str(p))) for p in (a, b))
    assert (da.n_users, da.n_items) == (db.n_users, db.n_items)
    for s in SPLITS:
        np.testing.assert_array_equal(da.split(s), db.split(s))
    assert db.image_feat is None and not db.has_features


def test_both_layouts_prefer_npy(tmp_path, cache, caplog):
    d = _write_npy(tmp_path / "both")
    write_mmrec(d, "both", {"train": TRAIN[:, :3], "valid": VALID, "test": TEST})
    with caplog.at_level(logging.WARNING, logger="rearm_dgl.data"):
        ds = load_dataset(DataConfig(dataset=str(d)))
    assert ds.train.shape[1] == TRAIN.shape[1]
    assert "using the .npy splits" in caplog.text


def test_drop_and_warn(tmp_path, cache, caplog):
    valid = np.concatenate([VALID, _pairs((3, 0), (3, 1))], axis=1)  # user 3: no train rows
    test = np.concatenate([TEST, _pairs((3, 2))], axis=1)
    d = _write_npy(tmp_path / "cold", {"train": TRAIN, "valid": valid, "test": test})
    with caplog.at_level(logging.WARNING, logger="rearm_dgl.data"):
        ds = load_dataset(DataConfig(dataset=str(d)))
    assert "dropped 2 valid and 1 test rows" in caplog.text
    assert ds.dropped == {"valid": 2, "test": 1}
    np.testing.assert_array_equal(ds.valid, VALID)
    np.testing.assert_array_equal(ds.test, TEST)
    assert ds.n_users == 5
    result = CliRunner().invoke(main, ["data", "info", str(d), "--no-graph"])
    assert result.exit_code == 0, result.output
    assert "valid 2 | test 1" in result.output


def test_features_json_sets_note(tmp_path, cache):
    d = _write_npy(tmp_path / "fj")
    (d / "features.json").write_text(json.dumps({"stand_in": True, "seed": 7, "note": "x"}))
    ds = load_dataset(DataConfig(dataset=str(d)))
    assert "stand-in" in ds.features_note and "seed 7" in ds.features_note


def test_name_resolution_and_env(tmp_path, cache, monkeypatch):
    root = tmp_path / "root"
    _write_npy(root / "toy")
    ds = load_dataset(DataConfig(dataset="toy", data_root=str(root)))
    assert ds.name == "toy" and ds.source == str((root / "toy").resolve())
    monkeypatch.setenv("REARM_DGL_DATA", str(root))
    assert load_dataset(DataConfig(dataset="toy")).n_items == 5
    with pytest.raises(DataError, match="not found"):
        load_dataset(DataConfig(dataset="nope"))


def test_fingerprint_memo_and_content(tmp_path, cache, monkeypatch):
    d = _write_npy(tmp_path / "fp")
    fp1 = load_dataset(DataConfig(dataset=str(d))).fingerprint
    assert (d / "_cache" / "file_hashes.json").is_file()

    def boom(path, *a, **k):
        raise AssertionError(f"rehashed {path}")

    monkeypatch.setattr(data_mod, "hash_file", boom)
    assert load_dataset(DataConfig(dataset=str(d))).fingerprint == fp1  # memo hit
    monkeypatch.undo()
    monkeypatch.setenv("REARM_DGL_CACHE", str(cache))
    # the same content elsewhere has the same fingerprint; changed content does not
    other = _write_npy(tmp_path / "fp2")
    assert load_dataset(DataConfig(dataset=str(other))).fingerprint == fp1
    np.save(other / "test.npy", TEST[:, :2])
    assert load_dataset(DataConfig(dataset=str(other))).fingerprint != fp1


def test_read_only_dir_falls_back_to_user_cache(tmp_path, cache):
    d = _write_npy(tmp_path / "ro")
    before = sorted(p.name for p in d.iterdir())
    d.chmod(0o555)
    try:
        ds = load_dataset(DataConfig(dataset=str(d)))
    finally:
        d.chmod(0o755)
    assert sorted(p.name for p in d.iterdir()) == before
    assert ds.cache_dir == cache / f"ro-{ds.fingerprint[:12]}"
    explicit = tmp_path / "mine"
    assert load_dataset(DataConfig(dataset=str(d), cache_dir=str(explicit))).cache_dir == explicit


def test_int32_splits_accepted(tmp_path, cache):
    d = _write_npy(tmp_path / "i32", {k: v.astype(np.int32) for k, v in SPLITS.items()})
    assert load_dataset(DataConfig(dataset=str(d))).train.dtype == np.int64


# ----------------------------------------------------------------------------- demo


def test_demo_deterministic_and_fast():
    t0 = time.perf_counter()
    a = syn.generate()
    assert time.perf_counter() - t0 < 2.0
    b = syn.generate()
    for f in ("train", "valid", "test", "image_feat", "text_feat"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    c = syn.generate(syn.DemoParams(seed=1))
    assert c.train.shape != a.train.shape or not np.array_equal(c.train, a.train)
    assert syn.DemoParams().fingerprint() == load_demo().fingerprint
    assert syn.DemoParams(seed=1).fingerprint() != syn.DemoParams().fingerprint()


def test_without_features_keeps_everything_but_the_feature_arrays():
    d = load_demo()
    csr = d.train_csr  # computed before: carried over, not recomputed
    lean = d.without_features()
    assert lean.image_feat is None and lean.text_feat is None and not lean.has_features
    assert d.image_feat is not None  # the original is unchanged
    assert lean.train_csr is csr
    for f in ("name", "source", "n_users", "n_items", "train", "valid", "test",
              "features_note", "fingerprint", "cache_dir"):
        assert getattr(lean, f) is getattr(d, f)
    assert (lean.known_csr != d.known_csr).nnz == 0  # not computed before: computed alike


def test_demo_split_invariants():
    d = syn.generate()
    assert d.n_users == syn.N_USERS and 0.95 * syn.N_ITEMS <= d.n_items <= syn.N_ITEMS
    keys = {s: getattr(d, s)[0] * d.n_items + getattr(d, s)[1] for s in ("train", "valid", "test")}
    total = sum(k.size for k in keys.values())
    assert len(np.unique(np.concatenate(list(keys.values())))) == total  # disjoint, no dups
    per_user = np.bincount(np.concatenate([getattr(d, s)[0] for s in keys]), minlength=d.n_users)
    assert per_user.min() >= syn.MIN_PER_USER and 10 <= per_user.mean() <= 15
    assert np.bincount(d.train[0], minlength=d.n_users).min() >= 1
    assert 0.72 <= d.train.shape[1] / total <= 0.84
    assert abs(d.valid.shape[1] - d.test.shape[1]) <= 0.05 * d.test.shape[1]
    items = np.concatenate([getattr(d, s)[1] for s in keys])
    assert np.unique(items).size == d.n_items  # every item id occurs
    assert d.image_feat.shape == (d.n_items, syn.IMAGE_DIM) and d.image_feat.min() >= 0
    assert d.text_feat.shape == (d.n_items, syn.TEXT_DIM)
    assert d.image_feat.dtype == d.text_feat.dtype == np.float32
    deg = np.bincount(d.train[1], minlength=d.n_items)
    assert deg.max() > 8 * np.median(deg)  # long tail


def _recall20(scores: np.ndarray, d) -> float:
    train = np.zeros((d.n_users, d.n_items), dtype=bool)
    train[d.train[0], d.train[1]] = True
    test = np.zeros_like(train)
    test[d.test[0], d.test[1]] = True
    scores = np.where(train, -np.inf, scores)
    top = np.argpartition(-scores, 20, axis=1)[:, :20]
    hits = np.take_along_axis(test, top, 1).sum(1)
    return float((hits / test.sum(1)).mean())


def test_demo_signal_separates_models():
    """Popularity < features < collaborative signal: models can be told apart on it."""
    d = syn.generate()
    r = np.zeros((d.n_users, d.n_items), dtype=np.float32)
    r[d.train[0], d.train[1]] = 1
    pop = _recall20(np.tile(r.sum(0), (d.n_users, 1)), d)
    f = d.image_feat / np.linalg.norm(d.image_feat, axis=1, keepdims=True)
    feat = _recall20((r @ f) @ f.T, d)
    cf = _recall20(r @ (r.T @ r), d)
    assert pop + 0.05 < feat and pop + 0.1 < cf


def test_demo_round_trip_cli(tmp_path, cache):
    out = tmp_path / "demo_out"
    result = CliRunner().invoke(main, ["data", "demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"demo.inter", "image_feat.npy", "text_feat.npy",
                                               "features.json"}
    built, loaded = load_demo(), load_dataset(DataConfig(dataset=str(out)))
    assert (built.n_users, built.n_items) == (loaded.n_users, loaded.n_items)
    for f in ("train", "valid", "test", "image_feat", "text_feat"):
        np.testing.assert_array_equal(getattr(built, f), getattr(loaded, f))
    assert "stand-in" in loaded.features_note and "synthetic" in loaded.features_note


def test_data_info_demo(cache):
    result = CliRunner().invoke(main, ["data", "info", "demo"])
    assert result.exit_code == 0, result.output
    assert "users          2,000" in result.output
    assert "synthetic" in result.output and "graph" in result.output


def test_data_info_prints_graph_stats(cache, monkeypatch):
    """The graph section prints whatever graph_stats returns, with the graph settings used."""
    import rearm_dgl.graphs as graphs

    seen = {}

    def fake_build(ds, gcfg):
        seen["cfg"] = gcfg
        return "G"

    monkeypatch.setattr(graphs, "load_or_build_graph", fake_build, raising=False)
    monkeypatch.setattr(graphs, "graph_stats", lambda g: {
        "nodes": {"user": 2000, "item": 995}, "edges": {("user", "interacts", "item"): 18654},
        "mean_degree": 9.327}, raising=False)
    result = CliRunner().invoke(main, ["data", "info", "demo"])
    assert result.exit_code == 0, result.output
    assert "user:interacts:item" in result.output and "18,654" in result.output
    assert "user_knn_k=" in result.output and seen["cfg"].item_knn_k >= 1
