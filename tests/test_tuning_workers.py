"""`rearm-dgl tune` with several processes: a worker killed mid-trial, two local workers on
one journal file, and two workers sharing a study in a real PostgreSQL database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import write_tiny_dataset
from optuna.trial import TrialState

from rearm_dgl import tuning

REPO = Path(__file__).resolve().parents[1]
TINY_SPACE = REPO / "rearm_dgl" / "studies" / "tiny.yaml"
FIXED = ["--set", "graph.user_knn_k=8", "--set", "train.device=cpu",
         "--set", "train.batch_size=128", "--pruner", "none"]
CLI = [sys.executable, "-c", "from rearm_dgl.cli import main; main()"]


def env() -> dict[str, str]:
    # One thread per process: tiny models on a shared machine run fastest that way.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def tune(*args) -> list[str]:
    return [*CLI, "tune", *[str(a) for a in args]]


def run(cmd, timeout=240) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def journal_study(study_dir: Path) -> optuna.Study:
    storage = tuning.open_storage(tuning.StorageSpec(None, study_dir / tuning.JOURNAL_FILE))
    return optuna.load_study(study_name=study_dir.name, storage=storage)


def check_finished(study: optuna.Study, n: int) -> list[optuna.trial.FrozenTrial]:
    """Exactly ``n`` completed trials, unique numbers, nothing left running or queued;
    returns the completed trials."""
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) and sorted(numbers) == list(range(len(numbers)))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(bool(t.user_attrs.get("preset")) for t in complete) == 1
    return complete


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_tiny_dataset(tmp_path / "baby")


def test_worker_killed_mid_trial_then_rerun_finishes_the_study(dataset, tmp_path):
    studies = tmp_path / "studies"
    cmd = tune("--dataset", dataset, "--space", TINY_SPACE, "--trials", 2, "--study", "kill",
               "--studies-dir", studies, "--set", "train.epochs=8", *FIXED)
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    metrics = studies / "kill" / "trials" / "0" / "metrics.jsonl"
    deadline = time.monotonic() + 180
    try:
        while not (metrics.is_file() and metrics.read_text().strip()):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "trial 0 never started an epoch"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = journal_study(studies / "kill").trials
    assert [(t.number, t.state) for t in killed] == [(0, TrialState.RUNNING)]
    assert "test.Recall@20" not in killed[0].user_attrs

    out = run(cmd).stdout
    assert "trial 0: its worker" in out
    complete = check_finished(journal_study(studies / "kill"), 2)
    trials = journal_study(studies / "kill").trials
    assert trials[0].state == TrialState.FAIL
    # The killed preset trial ran again under a new number, with the same values.
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    assert retry in complete and retry.params == killed[0].params
    assert retry.user_attrs["worker"]["pid"] != killed[0].user_attrs["worker"]["pid"]
    for t in complete:
        assert json.loads((Path(t.user_attrs["run_dir"]) / "results.json").read_text())


def test_two_local_workers_share_one_journal(dataset, tmp_path):
    studies = tmp_path / "studies"
    out = run(tune("--dataset", dataset, "--space", TINY_SPACE, "--trials", 4, "--study", "par",
                   "--studies-dir", studies, "--jobs", 2, "--set", "train.epochs=2",
                   *FIXED)).stdout
    assert "[worker 0]" in out and "[worker 1]" in out
    complete = check_finished(journal_study(studies / "par"), 4)
    assert len({t.user_attrs["worker"]["pid"] for t in complete}) == 2
    for t in complete:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir == studies / "par" / "trials" / str(t.number)
        assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"
    assert (studies / "par" / "best.yaml").is_file()


def postgres_url() -> str:
    url = os.environ.get("REARM_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("REARM_REQUIRE_POSTGRES") == "1":
            pytest.fail("REARM_REQUIRE_POSTGRES=1 but REARM_TEST_POSTGRES_URL is not set")
        pytest.skip("no PostgreSQL server: set REARM_TEST_POSTGRES_URL "
                    "(.ci/run starts one and sets it)")
    return url


@pytest.mark.postgres
def test_two_machines_finish_one_study_in_postgresql(dataset, tmp_path):
    url = postgres_url()
    name = f"pg-{uuid.uuid4().hex[:10]}"
    # Each "machine" has its own studies folder; only the database is shared.
    procs = [subprocess.Popen(
        tune("--dataset", dataset, "--space", TINY_SPACE, "--trials", 4, "--study", name,
             "--storage", url, "--studies-dir", tmp_path / f"machine{k}",
             "--set", "train.epochs=2", "--sampler-seed", k, *FIXED),
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for k in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    storage = tuning.open_storage(tuning.parse_storage(url, tmp_path))
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        complete = check_finished(study, 4)
        assert len({t.user_attrs["worker"]["pid"] for t in complete}) == 2
        for t in complete:  # each trial ran on the machine whose folder holds it
            assert (Path(t.user_attrs["run_dir"]) / "results.json").is_file()
        assert {Path(t.user_attrs["run_dir"]).parents[2].name for t in complete} == {
            "machine0", "machine1"}
    finally:
        optuna.delete_study(study_name=name, storage=storage)
