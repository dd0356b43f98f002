"""Every DataError case, fed through ``rearm-dgl data info <dir>``.

Each test checks the exit code (2), that the message names the offending file and gives a
fix, that no traceback is shown, and that nothing was written (the data folder listing is
unchanged, there is no ``_cache``, and the user cache folder stays empty).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rearm_dgl.cli import main
from rearm_dgl.data.io import write_inter


def _pairs(*rows) -> np.ndarray:
    return np.array(rows, dtype=np.int64).T.copy()


# 4 users, 5 items; every user has a train row
TRAIN = _pairs((0, 0), (0, 1), (1, 1), (1, 2), (2, 2), (2, 3), (3, 0), (3, 4))
VALID = _pairs((0, 2), (1, 3), (2, 4))
TEST = _pairs((0, 3), (1, 4), (3, 1))
N_ITEMS = 5


def write_valid_dataset(d: Path, features: bool = True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, arr in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        np.save(d / f"{name}.npy", arr)
    if features:
        rng = np.random.default_rng(0)
        np.save(d / "image_feat.npy", rng.random((N_ITEMS, 8), dtype=np.float32))
        np.save(d / "text_feat.npy", rng.standard_normal((N_ITEMS, 4)).astype(np.float32))
    return d


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def env(tmp_path, monkeypatch):
    cache = tmp_path / "user_cache"
    monkeypatch.setenv("REARM_DGL_CACHE", str(cache))
    monkeypatch.delenv("REARM_DGL_DATA", raising=False)
    return tmp_path, cache


def _save(d: Path, name: str, arr) -> None:
    np.save(d / name, arr)


def _inter(d: Path, text: str) -> None:
    for s in ("train", "valid", "test"):
        (d / f"{s}.npy").unlink()
    (d / f"{d.name}.inter").write_text(text)


def _valid_inter_text() -> str:
    rows = ["userID\titemID\tx_label"]
    for code, arr in enumerate((TRAIN, VALID, TEST)):
        rows += [f"{u}\t{i}\t{code}" for u, i in arr.T]
    return "\n".join(rows) + "\n"


# (id, mutation of a valid dataset folder, file the message must name, words it must contain)
CASES = [
    ("missing-file", lambda d: (d / "valid.npy").unlink(), "valid.npy", "missing"),
    ("no-split-files", lambda d: [(d / f"{s}.npy").unlink() for s in ("train", "valid", "test")],
     "train.npy", "no split files"),
    ("wrong-dtype", lambda d: _save(d, "train.npy", TRAIN.astype(np.float64)), "train.npy",
     "dtype"),
    ("wrong-shape", lambda d: _save(d, "train.npy", np.zeros((3, 4), dtype=np.int64)),
     "train.npy", "shape"),
    ("transposed", lambda d: _save(d, "valid.npy", VALID.T.copy()), "valid.npy", "shape"),
    ("not-npy", lambda d: (d / "test.npy").write_bytes(b"garbage"), "test.npy", "not a .npy"),
    ("negative-id", lambda d: _save(d, "test.npy", _pairs((0, 3), (-1, 4))), "test.npy",
     "negative"),
    ("huge-id", lambda d: _save(d, "valid.npy", _pairs((0, 2), (1, 2**40))), "valid.npy",
     "out of range"),
    ("item-beyond-features", lambda d: _save(d, "test.npy", _pairs((0, 3), (1, 7))),
     "image_feat.npy", "rows"),
    ("duplicate-pair", lambda d: _save(d, "train.npy", np.concatenate([TRAIN, TRAIN[:, :1]], 1)),
     "train.npy", "duplicate"),
    ("overlap", lambda d: _save(d, "test.npy", np.concatenate([TEST, TRAIN[:, :1]], 1)),
     "test.npy", "both train and test"),
    ("feature-rows", lambda d: _save(d, "text_feat.npy", np.ones((N_ITEMS + 2, 4), np.float32)),
     "text_feat.npy", "rows"),
    ("feature-1d", lambda d: _save(d, "image_feat.npy", np.ones(N_ITEMS, np.float32)),
     "image_feat.npy", "shape"),
    ("feature-nan", lambda d: _save(d, "text_feat.npy",
                                    np.where(np.eye(N_ITEMS, 4) > 0, np.nan, 1.0)),
     "text_feat.npy", "NaN"),
    ("feature-inf", lambda d: _save(d, "image_feat.npy",
                                    np.where(np.eye(N_ITEMS, 8) > 0, np.inf, 1.0)),
     "image_feat.npy", "inf"),
    ("empty-split", lambda d: _save(d, "valid.npy", np.zeros((2, 0), dtype=np.int64)),
     "valid.npy", "empty"),
    ("empty-after-drop", lambda d: _save(d, "valid.npy", _pairs((9, 1))), "valid.npy",
     "empty after dropping"),
    ("bad-features-json", lambda d: (d / "features.json").write_text("{stand_in: yes"),
     "features.json", "JSON"),
    ("inter-missing-column", lambda d: _inter(d, "userID\titemID\n0\t1\n"), ".inter",
     "x_label"),
    ("inter-bad-label", lambda d: _inter(d, _valid_inter_text() + "3\t2\t5\n"), ".inter",
     "x_label"),
    ("inter-not-integer", lambda d: _inter(d, _valid_inter_text() + "3\tabc\t0\n"), ".inter",
     "line 16"),
    ("inter-duplicate", lambda d: _inter(d, _valid_inter_text() + "0\t0\t0\n"), ".inter",
     "duplicate"),
    ("inter-overlap", lambda d: _inter(d, _valid_inter_text() + "0\t0\t2\n"), ".inter",
     "both train and test"),
]


def _run_info(target: Path):
    return CliRunner().invoke(main, ["data", "info", str(target)])


@pytest.mark.parametrize("mutate,fname,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_data_error_through_cli(env, mutate, fname, words):
    tmp, cache = env
    d = write_valid_dataset(tmp / "ds")
    mutate(d)
    before = snapshot(d)
    result = _run_info(d)
    assert result.exit_code == 2, result.output
    assert fname in result.output
    assert words.lower() in result.output.lower()
    assert "fix:" in result.output
    assert "Traceback" not in result.output
    assert snapshot(d) == before
    assert not (d / "_cache").exists()
    assert not cache.exists()


def test_missing_directory_says_where_to_download(env):
    tmp, cache = env
    missing = tmp / "nowhere" / "baby"
    result = _run_info(missing)
    assert result.exit_code == 2
    assert str(missing) in result.output
    assert "drive.google.com" in result.output and "REARM" in result.output
    assert not missing.exists() and not cache.exists()


def test_missing_named_dataset_under_data_root(env):
    tmp, cache = env
    root = tmp / "root"
    root.mkdir()
    result = CliRunner().invoke(main, ["data", "info", "baby", "--data-root", str(root)])
    assert result.exit_code == 2
    assert str(root / "baby") in result.output
    assert list(root.iterdir()) == [] and not cache.exists()


def test_valid_fixture_loads(env):
    """The base folder of the error cases is itself valid (so each case tests one thing)."""
    tmp, _ = env
    d = write_valid_dataset(tmp / "ds")
    result = CliRunner().invoke(main, ["data", "info", str(d), "--no-graph"])
    assert result.exit_code == 0, result.output
    d2 = write_valid_dataset(tmp / "ds2")
    _inter(d2, _valid_inter_text())
    result = CliRunner().invoke(main, ["data", "info", str(d2), "--no-graph"])
    assert result.exit_code == 0, result.output
    assert json.loads(CliRunner().invoke(main, ["data", "info", str(d2), "--no-graph", "--json"]).output)["users"] == 4


def test_write_inter_matches_reader(env):
    tmp, _ = env
    from rearm_dgl.data.io import read_inter

    write_inter(tmp / "x.inter", {"train": TRAIN, "valid": VALID, "test": TEST})
    back = read_inter(tmp / "x.inter")
    for s, arr in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        np.testing.assert_array_equal(back[s], arr)
