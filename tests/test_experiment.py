"""Experiment files end to end on a tiny planted dataset: expand, run, interrupt, resume,
status, then a report over the real runs checked against their results.json files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import write_tiny_dataset

from rearm_dgl.errors import ConfigError, DataError
from rearm_dgl.experiments import (
    LocalStore,
    experiment_status,
    format_status,
    load_experiment,
    run_experiment,
)
from rearm_dgl.reporting import build_report

FAST = {"train.epochs": 2, "train.patience": 2, "train.batch_size": 64, "train.lr": 1e-2,
        "train.device": "cpu", "mf.embedding_size": 8, "lightgcn.embedding_size": 8,
        "rearm.embedding_size": 8, "rearm.n_layers": 1, "graph.user_knn_k": 5,
        "graph.item_knn_k": 3, "train.checkpoint_minutes": 0}


def write_exp(path: Path, **body) -> Path:
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


class Interrupt(KeyboardInterrupt):
    """Raised by a callback to simulate Ctrl-C in the middle of a cell."""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny dataset and three experiment files (comparison, ablation, sweep)."""
    root = tmp_path_factory.mktemp("exp")
    data = write_tiny_dataset(root / "data" / "tiny", stand_in=True)
    runs = root / "runs"
    files = {
        "main": write_exp(root / "main.yaml", name="main", models=["mf", "lightgcn", "rearm"],
                          datasets=[str(data)], seeds=[1, 2], set=FAST, runs_dir=str(runs)),
        "abl": write_exp(root / "abl.yaml", name="abl", models=["rearm"], datasets=[str(data)],
                         seeds=[1], set={**FAST, "train.epochs": 1},
                         variants={"full": {}, "no_cl": {"rearm.use_cl": False}},
                         labels={"no_cl": "w/o CL"}, runs_dir=str(runs)),
        "sens": write_exp(root / "sens.yaml", name="sens", models=["rearm"],
                          datasets=[str(data)], seeds=[1], set={**FAST, "train.epochs": 1},
                          sweep={"rearm.n_layers": [1, 2]}, runs_dir=str(runs)),
    }
    return root, data, runs, files


def test_expand_cells_and_run_dirs(tmp_path):
    f = write_exp(tmp_path / "e.yaml", models=["mf", "rearm"], datasets=["demo"], seeds=[3, 4],
                  variants={"a": {}, "b": {"rearm.use_cl": False}},
                  sweep={"graph.user_knn_k": [5, 10]}, set={"train.epochs": 1},
                  runs_dir=str(tmp_path / "runs"))
    exp = load_experiment(f)
    cells = exp.cells()
    assert exp.name == "e" and exp.kind == "sweep"
    assert len(cells) == 2 * 1 * (2 * 2) * 2
    cell = next(c for c in cells if c.model == "rearm" and c.variant == "b+user_knn_k=10")
    assert exp.run_dir(cell) == tmp_path / "runs/e/demo/rearm/b+user_knn_k=10/s3"
    cfg = exp.config(cell)
    assert (cfg.params.use_cl, cfg.graph.user_knn_k, cfg.train.seed, cfg.train.epochs) == (
        False, 10, 3, 1)
    mf = exp.config(next(c for c in cells if c.model == "mf" and c.variant.startswith("b")))
    assert mf.model == "mf"  # the rearm.* override is skipped for MF, not an error


@pytest.mark.parametrize("body, match", [
    ({"models": ["nosuch"], "datasets": ["demo"], "seeds": [1]}, "unknown model 'nosuch'"),
    ({"models": ["mf"], "datasets": ["demo"], "seeds": [1], "typo": 1}, "unknown key"),
    ({"models": ["mf"], "datasets": ["demo"]}, "'seeds' is missing"),
    ({"models": ["mf"], "datasets": ["demo"], "seeds": [1], "set": {"train.nope": 1}},
     "train.nope"),
    ({"models": ["mf"], "datasets": ["demo"], "seeds": [1],
      "sweep": {"train.lr": [1], "train.epochs": [1], "mf.reg_weight": [1]}}, "one or two"),
])
def test_bad_experiment_files(tmp_path, body, match):
    f = write_exp(tmp_path / "bad.yaml", **body)
    with pytest.raises(ConfigError, match=match) as err:
        run_experiment(f, runs_dir=tmp_path / "runs")
    assert "bad.yaml" in str(err.value)
    assert not (tmp_path / "runs").exists()


def test_unknown_dataset_fails_before_anything_runs(tmp_path):
    f = write_exp(tmp_path / "e.yaml", models=["mf"], datasets=["demo", str(tmp_path / "nope")],
                  seeds=[1], runs_dir=str(tmp_path / "runs"))
    with pytest.raises(DataError, match="nope"):
        run_experiment(f)
    assert not (tmp_path / "runs").exists()


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")
def test_interrupted_run_resumes_only_unfinished_cells_then_reports(world, tmp_path):
    root, data, runs, files = world
    calls = []

    def stop_in_third_cell(epoch, valid):
        calls.append(epoch)
        if len(calls) == 3:  # mf s1 ran epochs 1-2; stop mf s2 after its first epoch
            raise Interrupt()

    with pytest.raises(KeyboardInterrupt):
        run_experiment(files["main"], callbacks=[stop_in_third_cell])
    exp = load_experiment(files["main"])
    states = {(s.cell.model, s.cell.seed): s for s in experiment_status(exp)}
    assert states[("mf", 1)].state == "done"
    assert states[("mf", 2)].state == "missing" and "resumes" in states[("mf", 2)].detail
    assert LocalStore(exp).claim(states[("mf", 2)].cell) is not None  # its claim was released
    assert states[("rearm", 2)].state == "missing"
    done = states[("mf", 1)].run_dir / "results.json"
    before = (done.read_bytes(), done.stat().st_mtime_ns)

    summary = run_experiment(files["main"])
    assert summary.skipped == [states[("mf", 1)].run_dir]
    assert len(summary.ran) == 5 and not summary.failed
    assert (done.read_bytes(), done.stat().st_mtime_ns) == before  # never redone
    resumed = states[("mf", 2)].run_dir
    epochs = [json.loads(x)["epoch"] for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert "restarted" not in json.loads((resumed / "cell.json").read_text())
    assert all(s.state == "done" for s in experiment_status(exp))
    assert run_experiment(files["main"]).ran == []  # all done: nothing runs again

    # The other two experiment kinds, then one report over all three.
    for key in ("abl", "sens"):
        assert not run_experiment(files[key]).failed
    out = tmp_path / "report"
    build_report(out, experiments=[files["main"], files["abl"], files["sens"]])
    md = (out / "results.md").read_text()
    for png in ("ablation.png", "sensitivity.png", "curves.png"):
        blob = (out / png).read_bytes()
        assert blob.startswith(b"\x89PNG") and len(blob) > 5000
    labels = {"mf": "BPR-MF", "lightgcn": "LightGCN", "rearm": "REARM"}
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")]
            for line in md.splitlines() if line.startswith("| ")}
    for col, metric in enumerate(("Recall@10", "Recall@20", "NDCG@10", "NDCG@20"), 1):
        raw = {m: [json.loads((runs / "main/tiny" / m / "default" / f"s{s}" / "results.json")
                              .read_text())["test"][metric] for s in (1, 2)] for m in labels}
        means = {m: float(np.mean(v)) for m, v in raw.items()}
        best = max(means, key=means.get)
        for m, label in labels.items():
            cell = rows[label][col]
            plain = cell.replace("**", "").replace("<u>", "").replace("</u>", "")
            assert plain == f"{means[m]:.4f} ± {np.std(raw[m], ddof=1):.4f}"
            if m == best:  # marks compare the displayed values: a tie may share the bold
                assert cell.startswith("**")
        assert "†" not in rows["REARM"][col]  # never a dagger from 2 seeds
    index = (out / "index.md").read_text()
    assert index.count("`" + str(runs)) == 6 + 2 + 2  # every run directory is listed
    assert "w/o CL" in (out / "ablation.md").read_text()
    assert "tiny test features" in index


def test_status_grid_failed_running_stale_and_cli(world, tmp_path):
    root, data, runs, files = world
    if not (runs / "main/tiny/mf/default/s1/results.json").exists():
        run_experiment(files["main"])
    copy = tmp_path / "runs"
    shutil.copytree(runs / "main", copy / "main")
    exp = load_experiment(files["main"], runs_dir=copy)
    cells = {(c.model, c.seed): c for c in exp.cells()}
    failed, running, stale = (exp.run_dir(cells[k]) for k in (("mf", 2), ("lightgcn", 1),
                                                                 ("rearm", 2)))
    (failed / "results.json").unlink()
    (failed / "error.json").write_text(json.dumps({"message": "ValueError: boom"}))
    (running / "results.json").unlink()
    held = LocalStore(exp).claim(cells[("lightgcn", 1)])  # a live worker runs it
    res = json.loads((stale / "results.json").read_text())
    res["config_fingerprint"] = "0" * 32
    (stale / "results.json").write_text(json.dumps(res))
    states = {(s.cell.model, s.cell.seed): s.state for s in experiment_status(exp)}
    assert states == {("mf", 1): "done", ("mf", 2): "failed", ("lightgcn", 1): "running",
                      ("lightgcn", 2): "done", ("rearm", 1): "done", ("rearm", 2): "stale"}
    grid = format_status(exp, experiment_status(exp))
    assert "FAIL" in grid and "RUN" in grid and "STALE" in grid and "boom" in grid
    with pytest.raises(ConfigError, match=str(stale)):
        run_experiment(files["main"], runs_dir=copy)
    with pytest.raises(DataError, match=str(stale)):  # and the report refuses it too
        build_report(tmp_path / "rep", runs_dir=copy, experiments=[files["main"]])
    assert not (tmp_path / "rep").exists()

    from rearm_dgl.cli import main

    result = CliRunner().invoke(main, ["experiment", "status", str(files["main"]),
                                       "--runs-dir", str(copy)])
    held.release()
    assert result.exit_code == 0, result.output
    assert "mf" in result.output and "done" in result.output and "FAIL" in result.output
    result = CliRunner().invoke(main, ["report", "--runs", str(tmp_path / "empty"),
                                       "--out", str(tmp_path / "r2")])
    assert result.exit_code == 2 and "runs folder not found" in result.output
    assert not (tmp_path / "r2").exists()


def test_cli_run_with_two_jobs(tmp_path):
    data = write_tiny_dataset(tmp_path / "tiny")
    f = write_exp(tmp_path / "j.yaml", name="j", models=["mf"], datasets=[str(data)],
                  seeds=[1, 2], set={**FAST, "train.epochs": 1}, runs_dir=str(tmp_path / "runs"))
    from rearm_dgl.cli import main

    result = CliRunner().invoke(main, ["experiment", "run", str(f), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert "ran 2" in result.output
    for seed in (1, 2):
        res = json.loads((tmp_path / f"runs/j/tiny/mf/default/s{seed}/results.json").read_text())
        assert res["status"] == "completed" and res["seed"] == seed
    result = CliRunner().invoke(main, ["experiment", "run", str(f), "--jobs", "2"])
    assert "ran 0, already done 2" in result.output


def test_a_worker_waiting_on_a_held_cell_says_so_then_runs_it(tmp_path, monkeypatch):
    # A holder that is alive is never taken over, however long it takes; the waiting worker
    # says what it waits for, so a stuck holder shows itself.
    from rearm_dgl.experiments import run as run_mod

    data = write_tiny_dataset(tmp_path / "tiny")
    f = write_exp(tmp_path / "w.yaml", name="w", models=["mf"], datasets=[str(data)],
                  seeds=[1], set={**FAST, "train.epochs": 1}, runs_dir=str(tmp_path / "runs"))
    exp = load_experiment(f)
    (cell,) = exp.cells()
    held = LocalStore(exp).claim(cell)  # another process's claim, as far as the worker sees
    assert held is not None
    monkeypatch.setattr(LocalStore, "poll_seconds", 0.01)
    monkeypatch.setattr(run_mod, "WAIT_REPORT_SECONDS", 0.0)
    lines, sleeps = [], []

    def echo(line):
        lines.append(line)
        if sum(x.startswith("waiting") for x in lines) == 3:
            held.release()  # the holder finishes without a result: the worker runs the cell

    def sleep(seconds):  # the worker's poll; a bound on the wait should the lines never come
        sleeps.append(seconds)
        if len(sleeps) == 50:
            held.release()

    monkeypatch.setattr(run_mod.time, "sleep", sleep)
    summary = run_experiment(f, echo=echo)
    waiting = [x for x in lines if x.startswith("waiting")]
    assert len(waiting) == 3
    assert waiting[0] == (f"waiting 0 min for 1 cell that other workers hold: {cell.key} "
                          "(held by a live process)")
    assert len(summary.ran) == 1 and not summary.busy


def test_shipped_experiment_files_resolve_from_any_folder(tmp_path, monkeypatch):
    from rearm_dgl.cli import main
    from rearm_dgl.studies import FOLDER

    monkeypatch.chdir(tmp_path)
    for name in ("main_tiny.yaml", "studies/main_tiny.yaml"):
        exp = load_experiment(name)
        assert exp.source == FOLDER / "main_tiny.yaml" and exp.name == "main_tiny"
        assert exp.cell_info(exp.cells()[0])["experiment_file"] == "main_tiny.yaml"
    result = CliRunner().invoke(main, ["experiment", "status", "ablation_tiny.yaml",
                                       "--no-data-check"])
    assert result.exit_code == 0 and "ablation_tiny" in result.output, result.output
    # A user's own file of the same name wins.
    write_exp(tmp_path / "main_tiny.yaml", name="mine", models=["mf"], datasets=["demo"],
              seeds=[1])
    assert load_experiment("main_tiny.yaml").name == "mine"
    assert list(tmp_path.iterdir()) == [tmp_path / "main_tiny.yaml"]  # status wrote nothing
