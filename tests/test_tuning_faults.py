"""`rearm-dgl tune` under faults and at scale: signals to the parent, workers sharing a seed,
damaged journal files, missing features, a failed preset trial, progress lines, what trials
leave on disk, and the Optuna outputs (rounded steps, metric names, folder modes)."""

from __future__ import annotations

import csv
import os
import signal
import stat
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml
from click.testing import CliRunner
from conftest import write_tiny_dataset
from optuna.trial import TrialState
from test_tuning_workers import CLI, FIXED, TINY_SPACE, env, journal_study, run, tune

from rearm_dgl import tuning
from rearm_dgl.cli import main
from rearm_dgl.tuning.outputs import PARALLEL_AXES, _important_params


def cli(*args, code=0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, (result.output, result.exception)
    return result


def fake_runner(cfg, run_dir, callback, progress=None):
    """Stands in for training: a smooth function of the searched values, two epochs."""
    value = 1.0 / (1.0 + abs(cfg.params.cl_tmp - 0.3)) - 0.01 * cfg.params.n_layers
    for epoch in (1, 2):
        callback(epoch, {"Recall@20": value * epoch / 2})
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(valid={"Recall@20": value}, test={"Recall@20": value / 2},
                           best_epoch=2, stop_reason="max_epochs")


def fake_study(tmp_path: Path, name: str = "fs", trials: int = 3, **kw) -> Path:
    data_dir = tmp_path / "baby"
    if not data_dir.exists():
        write_tiny_dataset(data_dir)
    kw.setdefault("space", TINY_SPACE)
    tuning.run_study(name, dataset=str(data_dir), trials=trials, pruner="none",
                     studies_dir=tmp_path / "studies", overrides=["graph.user_knn_k=8"],
                     runner=kw.pop("runner", fake_runner), echo=lambda line: None, **kw)
    return tmp_path / "studies" / name


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(p) for p in text]
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids, seconds=60) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


# ---------------------------------------------------------------------------------------
# Signals to the parent of `tune --jobs 2`


def start_two_workers(dataset: Path, studies: Path, epochs: int = 15):
    cmd = tune("--dataset", dataset, "--space", TINY_SPACE, "--trials", 2, "--study", "sig",
               "--studies-dir", studies, "--jobs", 2, "--set", f"train.epochs={epochs}",
               "--set", "train.patience=1000", *FIXED)
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 180
    seen = set()
    while len(seen) < 2:  # both workers are in a trial, past an epoch
        line = proc.stdout.readline()
        assert line or proc.poll() is None, "tune ended early"
        assert time.monotonic() < deadline, "the workers never reached an epoch"
        if " epoch " in line and "] trial " in line:
            seen.add(line.split("]")[0])
    return cmd, proc, children(proc.pid)


def test_sigterm_of_the_parent_stops_its_workers_and_the_rerun_finishes(tmp_path):
    dataset = write_tiny_dataset(tmp_path / "baby")
    studies = tmp_path / "studies"
    cmd, proc, workers = start_two_workers(dataset, studies)
    assert len(workers) >= 2
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    assert "interrupted" in out and "Traceback" not in out
    assert wait_gone(workers) == []  # no orphans
    # The outputs are written, and the stopped trials are queued again.
    assert (studies / "sig" / "trials.csv").is_file()
    trials = journal_study(studies / "sig").trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert len([t for t in trials if t.state == TrialState.WAITING]) == 2

    # The same command resumes the study and finishes it.
    run(cmd)
    complete = [t for t in journal_study(studies / "sig").trials
                if t.state == TrialState.COMPLETE]
    assert len(complete) == 2


def test_sigkill_of_the_parent_leaves_no_orphan_workers(tmp_path):
    dataset = write_tiny_dataset(tmp_path / "baby")
    _, proc, workers = start_two_workers(dataset, tmp_path / "studies")
    proc.kill()
    proc.wait()
    assert wait_gone(workers) == []


# ---------------------------------------------------------------------------------------
# Workers that share a seed


def test_two_workers_with_one_seed_never_propose_the_same_point(tmp_path):
    dataset = write_tiny_dataset(tmp_path / "baby")
    studies = tmp_path / "studies"
    # Both commands are the same, as on two machines: same --sampler-seed.
    cmd = tune("--dataset", dataset, "--space", TINY_SPACE, "--trials", 6, "--study", "same",
               "--studies-dir", studies, "--set", "train.epochs=1", "--sampler-seed", 7, *FIXED)
    procs = [subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    done = [t for t in journal_study(studies / "same").trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 6
    points = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(points)) == len(points), points


def test_a_resumed_study_runs_no_point_twice(tmp_path):
    study_dir = fake_study(tmp_path, trials=3)
    fake_study(tmp_path, trials=8)
    done = [t for t in journal_study(study_dir).trials if t.state == TrialState.COMPLETE]
    assert len(done) == 8
    points = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(points)) == 8


# ---------------------------------------------------------------------------------------
# Damaged journal files


def test_a_torn_last_journal_record_is_cut_off(tmp_path):
    study_dir = fake_study(tmp_path)
    journal = study_dir / "journal.log"
    good = journal.read_bytes()
    journal.write_bytes(good + b'{"op_code": 5, "worker_id": "x", "tri')  # killed mid-append
    out = cli("tune", "--study", "fs", "--studies-dir", tmp_path / "studies", "--summary").output
    assert "torn" in out and "3 complete" in out
    assert journal.read_bytes() == good
    # The study goes on from there.
    fake_study(tmp_path, trials=4)
    assert len(journal_study(study_dir).trials) == 4


@pytest.mark.parametrize("damage", ["middle", "foreign"])
def test_a_corrupt_or_foreign_journal_is_refused_by_name(tmp_path, damage):
    study_dir = fake_study(tmp_path)
    journal = study_dir / "journal.log"
    lines = journal.read_bytes().splitlines(keepends=True)
    if damage == "middle":
        lines[1] = b'{"op_code": 4, "tri\n'
        journal.write_bytes(b"".join(lines))
    else:
        journal.write_text("this is my shopping list\nmilk\n")
    before = journal.read_bytes()
    result = cli("tune", "--study", "fs", "--studies-dir", tmp_path / "studies", "--summary",
                 code=2)
    assert "journal.log" in result.output and "line 2" in result.output.replace(
        "line 1", "line 2")
    assert "Traceback" not in result.output
    assert journal.read_bytes() == before


# ---------------------------------------------------------------------------------------
# Features checked first; a failed preset trial runs again


def test_tune_seed_is_not_the_sampler_seed():
    result = cli("tune", "--seed", 3, "--trials", 1, code=2)
    assert "--sampler-seed" in result.output and "train.seed" in result.output


def test_missing_features_are_refused_before_the_study_exists(tmp_path):
    data_dir = write_tiny_dataset(tmp_path / "plain", features=False)
    studies = tmp_path / "studies"
    result = cli("tune", "--dataset", data_dir, "--space", TINY_SPACE, "--trials", 2,
                 "--studies-dir", studies, *FIXED, code=2)
    assert "features" in result.output and str(data_dir) in result.output
    assert not studies.exists()


def test_a_failed_preset_trial_is_run_again(tmp_path):
    def broken(cfg, run_dir, callback, progress=None):
        raise RuntimeError("data was broken")

    with pytest.raises(RuntimeError, match="data was broken"):
        fake_study(tmp_path, trials=1, runner=broken)
    study_dir = tmp_path / "studies" / "fs"
    first = journal_study(study_dir).trials
    assert first[0].user_attrs.get("preset") and first[0].state == TrialState.FAIL
    fake_study(tmp_path, trials=2)  # the data is fixed
    trials = journal_study(study_dir).trials
    presets = [t for t in trials if t.user_attrs.get("preset")
               and t.state == TrialState.COMPLETE]
    assert len(presets) == 1 and presets[0].params == first[0].params


# ---------------------------------------------------------------------------------------
# Progress, disk, working directory


def test_tune_from_an_empty_folder_prints_tagged_progress(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    done = subprocess.run([*CLI, "tune", "--dataset", "demo", "--trials", "2", "--set",
                           "train.epochs=1"], cwd=folder, env=env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    for n in (0, 1):
        assert f"trial {n} epoch 1 valid Recall@20" in done.stdout
        assert f"trial {n}: complete, Recall@20" in done.stdout
    assert (folder / "studies" / "rearm-demo" / "best.yaml").is_file()


def test_trials_keep_no_checkpoints(tmp_path):
    space = tmp_path / "mf.yaml"
    space.write_text("train.lr: {type: float, low: 0.001, high: 0.1, log: true}\n"
                     "mf.embedding_size: {type: categorical, choices: [8, 16, 32, 64]}\n")
    studies = tmp_path / "studies"
    cli("tune", "--model", "mf", "--dataset", "demo", "--space", space, "--trials", 6,
        "--studies-dir", studies, "--set", "train.epochs=2", "--pruner", "none")
    trials = sorted((studies / "mf-demo" / "trials").iterdir())
    assert len(trials) == 6
    for t in trials:
        assert (t / "results.json").is_file()
        assert not list(t.glob("*.pt")), sorted(p.name for p in t.iterdir())
    best = yaml.safe_load((studies / "mf-demo" / "best.yaml").read_text())
    assert best["train"]["keep_checkpoints"] == "best"  # the retrained winner keeps its best


# ---------------------------------------------------------------------------------------
# Optuna outputs


def test_outputs_round_steps_name_the_metric_and_use_the_umask(tmp_path):
    space = tmp_path / "stepped.yaml"
    space.write_text("rearm.cl_tmp: {type: float, low: 0.1, high: 0.9, step: 0.1}\n"
                     "rearm.n_layers: {type: int, low: 1, high: 4}\n")
    old = os.umask(0o022)
    try:
        study_dir = fake_study(tmp_path, trials=6, space=space)
    finally:
        os.umask(old)
    text = (study_dir / "trials.csv").read_text() + (study_dir / "best.yaml").read_text()
    assert "0000000" not in text and "9999999" not in text
    rows = list(csv.DictReader((study_dir / "trials.csv").open()))
    assert all(len(r["params_rearm.cl_tmp"]) <= 3 for r in rows)
    study = journal_study(study_dir)
    assert study.metric_names == ["valid Recall@20"]
    t = study.best_trial
    assert Path(t.user_attrs["run_dir"]).is_absolute() and t.user_attrs["host"]
    mode = stat.S_IMODE((study_dir / "tensorboard").stat().st_mode)
    assert mode == 0o755, oct(mode)


def test_parallel_coordinates_show_the_most_important_parameters(tmp_path):
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    names = [f"p{i}" for i in range(10)]

    def f(trial):
        xs = [trial.suggest_float(n, 0, 1) for n in names]
        return xs[0] * 10 + xs[1]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(f, n_trials=30)
    shown = _important_params(study, names)
    assert len(shown) == PARALLEL_AXES and shown[0] == "p0"
