"""Run integrity through the CLI: one process per run, resume and evaluate from anywhere,
clear messages for damaged checkpoints, edited configs and removed weights, and progress."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import write_tiny_dataset

from rearm_dgl import tracking
from rearm_dgl.cli import main
from rearm_dgl.config import build_config
from rearm_dgl.train import fit

FAST = ["--device", "cpu", "--set", "train.batch_size=64", "--set", "train.lr=0.05"]
REPO = Path(__file__).resolve().parents[1]


def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def refused(*args) -> str:
    """Run a command that must fail as a user error: exit 2, one message, no traceback."""
    result = run(*args, ok=False)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


def interrupted_run(dataset, runs_dir, *sets, stop_at=2) -> Path:
    """An mf run on ``dataset`` stopped (as by Ctrl-C) after epoch ``stop_at``."""
    cfg = build_config("mf", str(dataset), overrides=[
        "train.epochs=4", "train.batch_size=64", "train.lr=0.05", "train.device=cpu",
        "mf.embedding_size=8", "train.checkpoint_minutes=0", *sets])

    def stop(epoch, valid):
        if epoch == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, runs_dir=runs_dir, callbacks=[stop], quiet=True)
    (run_dir,) = Path(runs_dir).glob("*/*/*")
    return run_dir.resolve()


def epochs_logged(run_dir) -> list[int]:
    return [r["epoch"] for r in tracking.read_metrics(run_dir)]


def test_two_resumes_of_one_run_do_not_both_proceed(tmp_path):
    run_dir = interrupted_run(write_tiny_dataset(tmp_path / "tiny"), tmp_path / "runs",
                              "train.epochs=100000", "train.patience=100000", stop_at=1)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "from rearm_dgl.cli import main; main()", "train",
           "--resume", str(run_dir), "--quiet"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while len(epochs_logged(run_dir)) < 3:  # the first resume is training
            assert first.poll() is None, first.stdout.read().decode()
            assert time.monotonic() < deadline, "the first resume did not start training"
            time.sleep(0.2)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert first.poll() is None  # still running: the second really met it
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert second.returncode == 2, second.stderr
    assert "another process is training this run" in second.stderr
    assert str(run_dir) in second.stderr and "Traceback" not in second.stderr
    logged = epochs_logged(run_dir)
    assert logged == list(range(1, len(logged) + 1))  # no epoch twice
    with tracking.hold_run_dir(run_dir):  # SIGKILL freed the lock: the run can go on
        pass


@pytest.mark.parametrize("minutes", [0, 10])  # with a checkpoint, and before the first
def test_resume_and_evaluate_work_from_another_folder(tmp_path, monkeypatch, minutes):
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    write_tiny_dataset(start / "tiny")
    elsewhere.mkdir()
    monkeypatch.chdir(start)
    run_dir = interrupted_run("tiny", "runs", "data.cache_dir=cache",  # relative paths
                              f"train.checkpoint_minutes={minutes}")
    assert build_config(file=run_dir / "config.yaml", use_preset=False).data.dataset == "tiny"

    monkeypatch.chdir(elsewhere)
    out = run("train", "--resume", run_dir, "--quiet").output
    assert "after 4 epochs" in out
    assert "matches results.json" in run("evaluate", run_dir).output
    assert not (elsewhere / "cache").exists()  # the cache folder the run started with
    assert (start / "cache").is_dir()


def test_resume_with_an_edited_config_names_the_key(tmp_path):
    run_dir = interrupted_run(write_tiny_dataset(tmp_path / "tiny"), tmp_path / "runs")
    path = run_dir / "config.yaml"
    saved = yaml.safe_load(path.read_text())
    saved["train"]["lr"] = 0.01
    path.write_text(yaml.safe_dump(saved))
    out = refused("train", "--resume", run_dir)
    assert "train.lr is 0.01, the run started with 0.05" in out and str(path) in out
    assert epochs_logged(run_dir) == [1, 2]

    # Keys that do not change what the run computes may change.
    saved["train"]["lr"] = 0.05
    saved["train"]["keep_checkpoints"] = "all"
    path.write_text(yaml.safe_dump(saved))
    run("train", "--resume", run_dir, "--quiet")
    assert {p.name for p in run_dir.glob("*.pt")} == {"checkpoint_best.pt", "checkpoint_last.pt"}


@pytest.mark.parametrize("damaged", ["checkpoint_last.pt", "checkpoint_best.pt"])
def test_a_damaged_checkpoint_is_one_clear_message(tmp_path, damaged):
    data_dir = write_tiny_dataset(tmp_path / "tiny")
    if damaged == "checkpoint_last.pt":
        run_dir = interrupted_run(data_dir, tmp_path / "runs")
        command = ("train", "--resume", run_dir)
    else:
        run("train", "--dataset", data_dir, "--model", "mf", "--epochs", 1, "--runs-dir",
            tmp_path / "runs", *FAST, "--quiet")
        (run_dir,) = (tmp_path / "runs").glob("*/*/*")
        command = ("evaluate", run_dir)
    path = run_dir / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # torn by a crash
    out = refused(*command)
    assert str(path) in out and "truncated or damaged" in out
    assert "weights_only" not in out and len(out.strip().splitlines()) == 2  # message, fix


def test_evaluate_says_when_the_policy_removed_the_best_weights(tmp_path):
    data_dir = write_tiny_dataset(tmp_path / "tiny")
    run("train", "--dataset", data_dir, "--model", "mf", "--epochs", 1, "--runs-dir",
        tmp_path / "runs", *FAST, "--set", "train.keep_checkpoints=none", "--quiet")
    (run_dir,) = (tmp_path / "runs").glob("*/*/*")
    assert not list(run_dir.glob("*.pt"))
    out = refused("evaluate", run_dir)
    assert "train.keep_checkpoints is 'none'" in out and "keep_checkpoints=best" in out


def test_the_retired_checkpoint_every_key(tmp_path, caplog):
    out = refused("train", "--model", "mf", "--set", "train.checkpoint_every=5")
    assert "train.checkpoint_every" in out and "train.checkpoint_minutes" in out
    # An older run's config.yaml still loads; the key is skipped with a warning.
    old = tmp_path / "config.yaml"
    old.write_text(yaml.safe_dump({"model": "mf", "train": {"checkpoint_every": 1}}))
    assert build_config(file=old, use_preset=False).train.checkpoint_minutes == 10.0
    assert "checkpoint_every is no longer used" in caplog.text


def test_train_shows_the_patience_not_an_eta(tmp_path):
    data_dir = write_tiny_dataset(tmp_path / "tiny")
    out = run("train", "--dataset", data_dir, "--model", "mf", "--epochs", 3, "--runs-dir",
              tmp_path / "runs", *FAST, "--set", "train.patience=7").output
    lines = [x for x in out.splitlines() if x.startswith("epoch ")]
    assert len(lines) == 3
    assert all("without gain)" in x and "/7 without gain" in x for x in lines)
    assert lines[0].startswith("epoch 1 valid Recall@20 ")
    assert "epoch 1/3" not in out
    (run_dir,) = (tmp_path / "runs").glob("*/*/*")
    assert json.loads((run_dir / "results.json").read_text())["epochs_run"] == 3


@pytest.mark.parametrize("damage", ["another_dataset", "garbage"])
def test_a_bad_graph_cache_is_rebuilt_with_one_line(tmp_path, damage):
    from rearm_dgl.config import DataConfig
    from rearm_dgl.data import load_dataset
    from rearm_dgl.graphs.cache import cache_path

    cache = tmp_path / "cache"
    first = write_tiny_dataset(tmp_path / "first")
    second = write_tiny_dataset(tmp_path / "second", n_users=45, seed=1)
    args = ["--model", "lightgcn", "--epochs", 1, "--runs-dir", tmp_path / "runs", *FAST,
            "--set", "lightgcn.embedding_size=8", "--set", f"data.cache_dir={cache}"]
    run("train", "--dataset", first, *args, "--quiet")
    graph_cfg = build_config("lightgcn", str(first)).graph
    first_bin = cache_path(load_dataset(DataConfig(str(first), cache_dir=str(cache))), graph_cfg)
    second_bin = cache_path(load_dataset(DataConfig(str(second), cache_dir=str(cache))),
                            graph_cfg)
    if damage == "another_dataset":  # a valid file of the 40-user dataset, for the 45-user one
        second_bin.write_bytes(first_bin.read_bytes())
        target, needle = second, "it holds 40 users and 30 items, the dataset 45 and 30"
    else:  # same size, so DGL itself has to refuse it
        size = first_bin.stat().st_size
        first_bin.write_bytes((b"garbage!" * (size // 8 + 1))[:size])
        target, needle = first, "DGLError"
    out = run("train", "--dataset", target, *args).output
    (line,) = [x for x in out.splitlines() if "cannot be used" in x]
    assert needle in line and line.endswith("rebuilding it")
    assert "Stack trace" not in out and "[bt]" not in out and "Traceback" not in out


def test_an_in_place_edit_with_the_same_size_and_mtime_changes_the_fingerprint(tmp_path):
    import numpy as np

    data_dir = write_tiny_dataset(tmp_path / "tiny")

    def fingerprint() -> str:
        out = run("data", "info", data_dir).output
        (line,) = [x for x in out.splitlines() if x.startswith("fingerprint")]
        return line.split()[-1]

    before = fingerprint()
    path = data_dir / "image_feat.npy"
    st = path.stat()
    feats = np.load(path)
    feats[0, 0] += 1.0
    payload = path.read_bytes()
    header = len(payload) - feats.nbytes
    with open(path, "r+b") as fh:  # the same inode, the same size
        fh.seek(header)
        fh.write(feats.tobytes())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime
    assert (path.stat().st_size, path.stat().st_mtime_ns, path.stat().st_ino) == (
        st.st_size, st.st_mtime_ns, st.st_ino)
    after = fingerprint()
    assert after != before
    fresh = write_tiny_dataset(tmp_path / "copy")
    np.save(fresh / "image_feat.npy", feats)
    assert run("data", "info", fresh).output.count(after) == 1  # the content's fingerprint


def test_train_removes_the_temporary_files_of_a_killed_graph_cache_write(tmp_path):
    cache = tmp_path / "cache"
    data_dir = write_tiny_dataset(tmp_path / "tiny")
    args = ["train", "--dataset", data_dir, "--model", "lightgcn", "--epochs", 1, "--runs-dir",
            tmp_path / "runs", *FAST, "--set", "lightgcn.embedding_size=8",
            "--set", f"data.cache_dir={cache}", "--quiet"]
    run(*args)
    (graph_file,) = (cache / "graphs").glob("*.bin")
    # What a kill during the save leaves: the temporary files of atomic_path.
    orphans = [graph_file.parent / f".{graph_file.name}.k1ll3d.bin.tmp",
               graph_file.parent / f".{graph_file.stem}.json.k1ll3d.json.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"half a graph")
    run(*args)
    assert not any(o.exists() for o in orphans)
    assert not list((cache / "graphs").glob(".*.tmp"))
