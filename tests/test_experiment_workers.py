"""`rearm-dgl experiment run` with several processes: local processes started at the same
moment, SIGTERM, workers on two "machines" sharing a PostgreSQL database (one of them
killed mid-cell), `report --storage` from an empty folder, and the bad-input cases of a
shared experiment."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import write_tiny_dataset
from test_tuning_workers import CLI, env, postgres_url

MF_FAST = {"train.epochs": 3, "train.patience": 50, "train.batch_size": 64, "train.lr": 1e-2,
           "train.device": "cpu", "mf.embedding_size": 8}


def write_exp(path: Path, **body) -> Path:
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def experiment(*args) -> list[str]:
    return [*CLI, "experiment", *[str(a) for a in args]]


def start(cmd, cwd: Path, extra_env: dict | None = None) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, cwd=cwd, env={**env(), **(extra_env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def done_lines(out: str) -> list[str]:
    """The keys of the cells a process reports as done."""
    return re.findall(r"^\[([^\]]+)\] done", out, flags=re.M)


def test_three_processes_at_once_run_each_cell_once(tmp_path):
    data = write_tiny_dataset(tmp_path / "tiny")
    f = write_exp(tmp_path / "c.yaml", name="c", models=["mf"], datasets=[str(data)],
                  seeds=[1, 2, 3, 4], set=MF_FAST, runs_dir=str(tmp_path / "runs"))
    procs = [start(experiment("run", f), tmp_path) for _ in range(3)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    counts = Counter(k for out in outs for k in done_lines(out))
    assert counts == {f"tiny/mf/default/s{s}": 1 for s in (1, 2, 3, 4)}, outs
    for s in (1, 2, 3, 4):
        run = tmp_path / f"runs/c/tiny/mf/default/s{s}"
        assert json.loads((run / "results.json").read_text())["status"] == "completed"
        epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3]
        assert "restarted" not in json.loads((run / "cell.json").read_text())
    # Every process says how its cells ended, with the time left.
    joined = "\n".join(outs)
    assert "epoch 1 valid Recall@20" in joined and " left for at most " in joined


def test_sigterm_stops_a_cell_where_the_rerun_resumes_it(tmp_path):
    data = write_tiny_dataset(tmp_path / "tiny")
    f = write_exp(tmp_path / "t.yaml", name="t", models=["mf"], datasets=[str(data)],
                  seeds=[1], set={**MF_FAST, "train.epochs": 1200, "train.patience": 5000,
                           "train.checkpoint_minutes": 0},
                  runs_dir=str(tmp_path / "runs"))
    proc = start(experiment("run", f), tmp_path)
    deadline = time.monotonic() + 120
    while "epoch 1 valid" not in (line := proc.stdout.readline()):
        assert line and time.monotonic() < deadline, "the cell never reached an epoch"
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130 and "interrupted" in out and "Traceback" not in out
    run = tmp_path / "runs/t/tiny/mf/default/s1"
    assert not (run / "results.json").exists() and (run / "checkpoint_last.pt").is_file()
    # Its claim was released: the same command resumes the cell and finishes it.
    again = subprocess.run(experiment("run", f), cwd=tmp_path, env=env(), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "ran 1" in again.stdout
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, len(epochs) + 1))


@pytest.mark.postgres
def test_two_machines_one_killed_mid_cell_then_report_from_a_third(tmp_path):
    url = postgres_url()
    data = write_tiny_dataset(tmp_path / "tiny")
    name = f"grid-{uuid.uuid4().hex[:8]}"
    f = write_exp(tmp_path / "grid.yaml", name=name, models=["mf"], datasets=[str(data)],
                  seeds=[1, 2, 3, 4, 5, 6], set={**MF_FAST, "train.epochs": 25})
    fast_claims = {"REARM_DGL_HEARTBEAT_SECONDS": "1", "REARM_DGL_CLAIM_GRACE_SECONDS": "6"}
    a = start(experiment("run", f, "--storage", url), tmp_path / "machine_a", fast_claims)
    b = start(experiment("run", f, "--storage", url), tmp_path / "machine_b", fast_claims)
    # Kill machine A in the middle of its first cell.
    deadline = time.monotonic() + 180
    killed = None
    lines_a = []
    while killed is None:
        line = a.stdout.readline()
        lines_a.append(line)
        assert line and time.monotonic() < deadline, "".join(lines_a)
        if " epoch 1 valid" in line:
            killed = line.split("]")[0].lstrip("[")
    a.kill()
    a.wait()
    out_b = b.communicate(timeout=300)[0]
    assert b.returncode == 0, out_b
    out_a = "".join(lines_a)
    counts = Counter(done_lines(out_a) + done_lines(out_b))
    keys = [f"tiny/mf/default/s{s}" for s in range(1, 7)]
    assert counts == dict.fromkeys(keys, 1), (out_a, out_b)
    assert killed in done_lines(out_b)  # the dead worker's cell ran again on B

    import sqlalchemy as sa

    from rearm_dgl.tuning.storage import parse_database_url

    engine = sa.create_engine(parse_database_url(url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("select key, state, attempts, results from rearm_cells "
                                        "where experiment = :e"), {"e": name}).all()
        assert sorted(r.key for r in rows) == keys
        assert all(r.state == "done" for r in rows)
        assert {r.key: r.attempts for r in rows}[killed] == 2
        assert all(json.loads(r.results)["status"] == "completed" for r in rows)

        # The same report from a third, empty folder, without the run folders ...
        third = tmp_path / "machine_c"
        third.mkdir()
        rep = subprocess.run(
            [*CLI, "report", "--storage", url, "--experiment", f, "--out", "rep"],
            cwd=third, env=env(), capture_output=True, text=True, timeout=300)
        assert rep.returncode == 0, rep.stdout + rep.stderr
        status = subprocess.run(experiment("status", f, "--storage", url), cwd=third, env=env(),
                                capture_output=True, text=True, timeout=120)
        assert status.returncode == 0 and "6 done" in status.stdout, status.stdout
        # ... equals the report of the same cells run locally.
        local = tmp_path / "local"
        local.mkdir()
        subprocess.run(experiment("run", f), cwd=local, env=env(), check=True,
                       capture_output=True, timeout=300)
        subprocess.run([*CLI, "report", "--experiment", f, "--out", "rep"], cwd=local,
                       env=env(), check=True, capture_output=True, timeout=300)
        for table in ("results.md", "results.tex"):
            assert (third / "rep" / table).read_text() == (local / "rep" / table).read_text()

        # Bad input changes nothing stored.
        def snapshot():
            with engine.connect() as conn:
                return conn.execute(sa.text("select key, state, attempts, token from rearm_cells "
                                            "where experiment = :e order by key"),
                                    {"e": name}).all()

        before = snapshot()
        other = write_exp(tmp_path / "other.yaml", name=name, models=["mf"],
                          datasets=[str(data)], seeds=[1, 2, 7], set=MF_FAST)
        bad = subprocess.run(experiment("run", other, "--storage", url), cwd=third, env=env(),
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and "other cells" in bad.stderr and name in bad.stderr
        assert "Traceback" not in bad.stderr
        # Machine B's runs folder is coordinated through the database: a worker without
        # --storage there is refused.
        bad = subprocess.run(experiment("run", f), cwd=tmp_path / "machine_b", env=env(),
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and "--storage" in bad.stderr and "Traceback" not in bad.stderr
        # ... and the local folder, run without a database, refuses --storage.
        bad = subprocess.run(experiment("run", f, "--storage", url), cwd=local, env=env(),
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and "on this machine" in bad.stderr
        assert snapshot() == before
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("delete from rearm_cells where experiment = :e"), {"e": name})
            conn.execute(sa.text("delete from rearm_experiments where name = :e"), {"e": name})
        engine.dispose()


def test_an_unreachable_database_is_a_clear_error_and_nothing_is_written(tmp_path):
    data = write_tiny_dataset(tmp_path / "tiny")
    f = write_exp(tmp_path / "u.yaml", name="u", models=["mf"], datasets=[str(data)],
                  seeds=[1], set=MF_FAST)
    cwd = tmp_path / "w"
    cwd.mkdir()
    done = subprocess.run(experiment("run", f, "--storage",
                                     "postgresql://rearm:pw@127.0.0.1:1/nothing"),
                          cwd=cwd, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "cannot connect" in done.stderr and "127.0.0.1:1" in done.stderr
    assert "Traceback" not in done.stderr and "pw" not in done.stderr
    assert list(cwd.iterdir()) == []


def test_a_database_experiment_on_sqlite_records_claims_results_and_reports(tmp_path):
    """The database store on SQLite (no server): the same rules as on PostgreSQL."""
    data = write_tiny_dataset(tmp_path / "tiny")
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    f = write_exp(tmp_path / "s.yaml", name="s", models=["mf"], datasets=[str(data)],
                  seeds=[1, 2], set=MF_FAST)
    (tmp_path / "a").mkdir()
    first = subprocess.run(experiment("run", f, "--storage", url), cwd=tmp_path / "a",
                           env=env(), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert sorted(done_lines(first.stdout)) == ["tiny/mf/default/s1", "tiny/mf/default/s2"]
    # Another machine finds nothing left to run ...
    (tmp_path / "b").mkdir()
    second = subprocess.run(experiment("run", f, "--storage", url), cwd=tmp_path / "b",
                            env=env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "ran 0, already done 2" in second.stdout
    # ... and writes the report without any run folder.
    rep = subprocess.run([*CLI, "report", "--storage", url, "--experiment", f, "--out", "rep"],
                         cwd=tmp_path / "b", env=env(), capture_output=True, text=True,
                         timeout=300)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert "BPR-MF" in (tmp_path / "b" / "rep" / "results.md").read_text()
    assert not list((tmp_path / "b").rglob("results.json"))
    # The same name with other cells is refused, and the database keeps what it had.
    other = write_exp(tmp_path / "o.yaml", name="s", models=["mf"], datasets=[str(data)],
                      seeds=[1, 3], set=MF_FAST)
    before = (tmp_path / "shared.db").read_bytes()
    bad = subprocess.run(experiment("run", other, "--storage", url), cwd=tmp_path / "b",
                         env=env(), capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "other cells" in bad.stderr and "s3" in bad.stderr
    assert (tmp_path / "shared.db").read_bytes() == before
