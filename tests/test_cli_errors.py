"""Bad input through the CLI, as a user meets it: one line that names the path or field, an
exit code, no traceback, and nothing written (no run folder, no half-written dataset).

Covers OS errors (read-only folder, a path under a file, a full disk), seeds out of range,
values refused against the loaded data (``train.lr=inf``, ``eval.topk`` above the item count,
raw un-reindexed ids), warnings for kNN sizes above the node count, and the messages for YAML
files, dropped cold-user rows, missing datasets, and the bare ``rearm-dgl`` command.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import TINY_ITEMS, TINY_USERS, write_tiny_dataset

from rearm_dgl import __version__
from rearm_dgl.cli import main

FAST = ["--device", "cpu", "--set", "train.batch_size=64", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def assert_refused(result, code: int, *needles: str) -> None:
    """Exit code, every needle in the message, one error line and no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception,
                                                                     SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)


# --- OS errors: one line naming the path and the problem (issue item 7) -------------------


def test_runs_dir_under_a_file(tmp_path):
    blocker = tmp_path / "plain-file"
    blocker.write_text("not a folder")
    result = invoke("train", "-m", "mf", "--epochs", 1, "--runs-dir", blocker / "runs", *FAST)
    assert_refused(result, 1, str(blocker / "runs"), "Not a directory", "a part of the path is a file")
    assert blocker.read_text() == "not a folder"
    assert listing(tmp_path) == ["plain-file"]


def test_read_only_runs_dir(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o555)
    # A root process may write into a read-only folder, so refuse what the OS refuses to
    # others: every folder creation under it fails with EACCES, as it does for a user.
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if Path(path).is_relative_to(runs) and Path(path) != runs:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    try:
        result = invoke("train", "-m", "mf", "--epochs", 1, "--runs-dir", runs, *FAST)
    finally:
        runs.chmod(0o755)
    assert_refused(result, 1, str(runs / "demo"), "Permission denied", "permissions")
    assert listing(runs) == []


def test_demo_out_under_a_file(tmp_path):
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    result = invoke("data", "demo", "--out", blocker / "demo")
    assert_refused(result, 1, str(blocker / "demo"), "Not a directory")
    assert listing(tmp_path) == ["plain-file"]


def test_demo_out_full_disk_leaves_nothing(tmp_path, monkeypatch):
    """A write that fails half-way leaves neither part of the dataset nor a new folder."""
    import rearm_dgl.data.io as dio

    def full(path, arr):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(dio, "save_npy", full)  # demo.inter is written first, then this fails
    out = tmp_path / "new" / "demo"
    result = invoke("data", "demo", "--out", out)
    assert_refused(result, 1, "No space left on device", "free some space")
    assert listing(tmp_path) == []


# --- seeds (item 8) -------------------------------------------------------------------------


@pytest.mark.parametrize("args,key", [
    (["--seed", -1], "train.seed"),
    (["--seed", 2**32], "train.seed"),
    (["--seed", 10**30], "train.seed"),
    (["--set", "train.seed=-5"], "train.seed"),
    (["--set", "graph.seed=99999999999999999999"], "graph.seed"),
])
def test_seed_out_of_range_is_refused_before_any_run_folder(tmp_path, args, key):
    runs = tmp_path / "runs"
    result = invoke("train", "-m", "mf", "--epochs", 1, "--runs-dir", runs, *args, *FAST)
    assert_refused(result, 2, key, "4294967295")
    assert not runs.exists()


def test_largest_seed_is_accepted(tmp_path):
    runs = tmp_path / "runs"
    result = invoke("train", "-m", "mf", "--epochs", 1, "--runs-dir", runs, "--seed",
                    2**32 - 1, *FAST)
    assert result.exit_code == 0, result.output
    assert [p.name.endswith(f"-s{2**32 - 1}") for p in runs.glob("*/*/*")] == [True]


def test_demo_seed_out_of_range(tmp_path):
    result = invoke("data", "demo", "--out", tmp_path / "demo", "--seed", -1)
    assert_refused(result, 2, "--seed", "4294967295")
    assert listing(tmp_path) == []


def test_experiment_seed_out_of_range(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({"models": ["mf"], "datasets": ["demo"], "seeds": [-1],
                                   "runs_dir": str(tmp_path / "runs")}))
    result = invoke("experiment", "run", exp)
    assert_refused(result, 2, str(exp), "train.seed")
    assert not (tmp_path / "runs").exists()


# --- values refused or warned about against the data (item 14) ------------------------------


@pytest.mark.parametrize("value", ["inf", "-.inf", ".nan", "1e400"])
def test_infinite_or_nan_learning_rate_is_refused(tmp_path, value):
    runs = tmp_path / "runs"
    result = invoke("train", "-m", "mf", "--runs-dir", runs, "--set", f"train.lr={value}",
                    *FAST)
    assert_refused(result, 2, "train.lr")
    assert not runs.exists()


def test_topk_above_the_item_count_is_refused(tmp_path):
    data_dir = write_tiny_dataset(tmp_path / "tiny")
    runs = tmp_path / "runs"
    result = invoke("train", "-m", "mf", "-d", data_dir, "--epochs", 1, "--runs-dir", runs,
                    "--set", "eval.topk=[10,50]", "--set", "eval.metric=Recall@10", *FAST)
    assert_refused(result, 2, "eval.topk", "[50]", f"{TINY_ITEMS} items")
    assert not runs.exists()


def test_knn_size_above_the_node_count_warns(tmp_path):
    data_dir = write_tiny_dataset(tmp_path / "tiny")
    result = invoke("train", "-m", "lightgcn", "-d", data_dir, "--epochs", 1, "--runs-dir",
                    tmp_path / "runs", "--set", f"graph.user_knn_k={TINY_USERS + 10}", *FAST)
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if "graph.user_knn_k" in line]
    assert len(warned) == 1 and f"{TINY_USERS} users" in warned[0], result.output
    assert "graph.item_knn_k" not in result.output


def _raw_id_dataset(root: Path) -> Path:
    """200 items whose ids were never re-indexed (up to 100,000,001), 50 users."""
    rng = np.random.default_rng(0)
    raw_items = 100_000_001 - rng.choice(10**8, size=200, replace=False)
    raw_items[0] = 100_000_001
    items = raw_items[np.stack([rng.permutation(200)[:6] for _ in range(50)])]  # (50, 6)
    items[0, 0] = 100_000_001  # the largest id is in train.npy
    root.mkdir()
    users = np.arange(50)[:, None]
    for name, cols in (("train", slice(0, 4)), ("valid", slice(4, 5)), ("test", slice(5, 6))):
        part = items[:, cols]
        pairs = np.stack([np.broadcast_to(users, part.shape).ravel(), part.ravel()])
        np.save(root / f"{name}.npy", pairs.astype(np.int64))
    return root


def test_raw_ids_are_refused_with_the_reindexing_fix(tmp_path):
    data_dir = _raw_id_dataset(tmp_path / "raw")
    before = listing(data_dir)
    runs = tmp_path / "runs"
    result = invoke("train", "-m", "mf", "-d", data_dir, "--epochs", 1, "--runs-dir", runs,
                    *FAST)
    assert_refused(result, 2, str(data_dir / "train.npy"), "item ids go up to",
                   "distinct item ids", "re-index")
    assert listing(data_dir) == before and not runs.exists()


def test_ids_with_small_gaps_are_accepted(tmp_path):
    """A subset of a re-indexed dataset keeps its ids: gaps are fine."""
    data_dir = write_tiny_dataset(tmp_path / "tiny", features=False)
    for name in ("train", "valid", "test"):
        arr = np.load(data_dir / f"{name}.npy")
        np.save(data_dir / f"{name}.npy", arr * np.array([[3], [5]]))  # ids spread out 3x, 5x
    result = invoke("data", "info", data_dir, "--no-graph")
    assert result.exit_code == 0, result.output


# --- messages (item 17) ---------------------------------------------------------------------


@pytest.mark.parametrize("body,needles", [
    ({"train": {"lrr": 0.1}}, ["train.lrr", "unknown field", "did you mean train.lr?"]),
    ({"train": {"epochs": "many"}}, ["train.epochs", "integer"]),
    ({"train": {"lr": -1}}, ["train.lr", "> 0"]),
    ({"trian": {"lr": 1}}, ["unknown section 'trian'", "did you mean train?"]),
    ({"model": "nosuch"}, ["unknown model 'nosuch'"]),
])
def test_yaml_errors_name_the_file(tmp_path, body, needles):
    cfg = tmp_path / "my-config.yaml"
    cfg.write_text(yaml.safe_dump(body))
    runs = tmp_path / "runs"
    result = invoke("train", "-m", "mf", "--config", cfg, "--runs-dir", runs, *FAST)
    assert_refused(result, 2, f"error: {cfg}: ", *needles)
    assert not runs.exists()


def test_dropped_cold_users_are_one_clean_line(tmp_path):
    data_dir = write_tiny_dataset(tmp_path / "tiny")
    valid = np.load(data_dir / "valid.npy")
    cold = np.array([[TINY_USERS], [0]], dtype=np.int64)  # a user with no training row
    np.save(data_dir / "valid.npy", np.concatenate([valid, cold], axis=1))
    result = invoke("train", "-m", "mf", "-d", data_dir, "--epochs", 1, "--runs-dir",
                    tmp_path / "runs", *FAST)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "dropped 1 valid" in line]
    assert len(lines) == 1, result.output
    assert lines[0].endswith(f"{data_dir}: dropped 1 valid and 0 test rows whose user has "
                             f"no training row (as MMRec does)")
    assert "UserWarning" not in result.output and "validate.py" not in result.output


def test_missing_own_dataset_has_no_download_hint(tmp_path):
    mine = tmp_path / "my-shop-data"
    result = invoke("train", "-m", "mf", "-d", mine, "--runs-dir", tmp_path / "runs", *FAST)
    assert_refused(result, 2, str(mine), "not found")
    assert "drive.google.com" not in result.output and "Baby" not in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("data", "info", empty)
    assert_refused(result, 2, "no split files")
    assert "drive.google.com" not in result.output


@pytest.mark.parametrize("name", ["baby", "Sports", "clothing"])
def test_missing_paper_dataset_says_where_to_download(tmp_path, name):
    root = tmp_path / "data"
    root.mkdir()
    result = invoke("data", "info", name, "--data-root", root)
    assert_refused(result, 2, str(root / name), "drive.google.com", "huggingface.co")
    assert listing(root) == []


def test_bare_command_prints_help_and_succeeds():
    result = invoke()
    assert result.exit_code == 0, result.output
    assert "Usage: rearm-dgl" in result.output
    for command in ("train", "evaluate", "models", "data", "tune", "experiment", "report"):
        assert command in result.output


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version_flags(flag):
    result = invoke(flag)
    assert result.exit_code == 0 and __version__ in result.output
