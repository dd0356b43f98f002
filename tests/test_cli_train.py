"""`rearm-dgl train`, `evaluate` and `models` end to end, through Click's test runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import write_tiny_dataset
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rearm_dgl import __version__
from rearm_dgl.cli import main
from rearm_dgl.config import load_config
from rearm_dgl.models import registry

FAST = ["--device", "cpu", "--set", "train.batch_size=64", "--set", "train.lr=0.05", "--quiet"]


def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def only_run(runs_dir):
    (run_dir,) = [p for p in runs_dir.glob("*/*/*") if p.is_dir()]
    return run_dir


def test_train_two_epochs_writes_every_artifact(tmp_path):
    data_dir = write_tiny_dataset(tmp_path / "tiny", stand_in=True)
    runs = tmp_path / "runs"
    out = run("train", "--dataset", data_dir, "--model", "mf", "--epochs", 2, "--seed", 5,
              "--runs-dir", runs, *FAST).output
    run_dir = only_run(runs)
    assert run_dir.parent == runs / "tiny" / "mf" and run_dir.name.endswith("-s5")
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "env.json", "metrics.jsonl", "results.json", "per_user_test.npz",
            "checkpoint_best.pt"} <= names
    assert "checkpoint_last.pt" not in names  # train.keep_checkpoints: best
    assert any(n.startswith("events.out.tfevents.") for n in names)
    assert not [n for n in names if n.endswith(".tmp")]

    cfg = load_config(run_dir / "config.yaml")
    assert (cfg.model, cfg.train.epochs, cfg.train.seed, cfg.train.lr) == ("mf", 2, 5, 0.05)
    assert cfg.train.negatives == "train_only"  # from the mf preset

    env = json.loads((run_dir / "env.json").read_text())
    for key in ("python", "torch", "dgl", "numpy", "device", "host", "cpu_count", "git_commit"):
        assert key in env
    assert env["device"] == "cpu" and "tiny test features" in env["features_note"]

    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert set(lines[0]) == {"epoch", "loss", "valid", "seconds", "train_seconds",
                             "eval_seconds", "lr"}
    assert set(lines[0]["loss"]) == {"total", "bpr", "reg"}
    assert {"Recall@10", "Recall@20", "NDCG@20", "Precision@10", "MAP@20"} <= set(lines[0]["valid"])

    res = json.loads((run_dir / "results.json").read_text())
    for key in ("model", "dataset", "seed", "best_epoch", "epochs_run", "stop_reason", "valid",
                "test", "wall_seconds", "data_fingerprint", "config_fingerprint",
                "features_note", "status", "efficiency"):
        assert key in res
    assert (res["model"], res["dataset"], res["seed"], res["epochs_run"]) == ("mf", "tiny", 5, 2)
    assert res["status"] == "completed" and res["stop_reason"] == "max_epochs"
    assert res["valid"] == lines[res["best_epoch"] - 1]["valid"]
    assert "tiny test features" in res["features_note"]

    per_user = np.load(run_dir / "per_user_test.npz")
    assert per_user["users"].shape == per_user["Recall@20"].shape == (40,)
    assert per_user["NDCG@10"].mean() == pytest.approx(res["test"]["NDCG@10"])

    tb = scalars(run_dir)
    for tag in ("loss/total", "loss/bpr", "loss/reg", "valid/Recall@20", "valid/NDCG@10",
                "time/epoch_s", "lr"):
        assert [step for step, _ in tb[tag]] == [1, 2], tag
    assert tb["loss/bpr"][1][1] == pytest.approx(lines[1]["loss"]["bpr"])
    assert tb["valid/Recall@20"][0][1] == pytest.approx(lines[0]["valid"]["Recall@20"])
    hp = scalars(run_dir / "hparams")  # the hparams session (rearm_dgl.hparams)
    assert hp["hparam/valid.Recall@20"][0][1] == pytest.approx(res["valid"]["Recall@20"])
    assert hp["hparam/test.NDCG@20"][0][1] == pytest.approx(res["test"]["NDCG@20"])

    # The closing table: valid and test metrics, stop reason, features note, run folder.
    assert "metric" in out and "valid" in out and "test" in out
    assert f"{res['test']['Recall@20']:.4f}" in out
    assert "max_epochs" in out and "features: " in out and str(run_dir) in out

    # evaluate reproduces results.json on both splits, and notices a mismatch.
    ev = run("evaluate", run_dir)
    assert "matches results.json" in ev.output
    assert f"{res['test']['Recall@20']:.4f}" in ev.output
    assert "matches results.json" in run("evaluate", run_dir, "--split", "valid").output
    res["test"]["Recall@20"] += 0.01
    (run_dir / "results.json").write_text(json.dumps(res))
    bad = run("evaluate", run_dir, ok=False)
    assert bad.exit_code == 2 and "differ" in bad.output and "Recall@20" in bad.output


def test_resume_from_the_cli(tmp_path):
    data_dir = write_tiny_dataset(tmp_path / "tiny")
    runs = tmp_path / "runs"
    from rearm_dgl.config import build_config
    from rearm_dgl.train import fit

    cfg = build_config("mf", str(data_dir), overrides=[
        "train.epochs=3", "train.batch_size=64", "train.lr=0.05", "train.device=cpu",
        "train.checkpoint_minutes=0"])

    def stop(epoch, valid):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, runs_dir=runs, callbacks=[stop], quiet=True)
    run_dir = only_run(runs)
    refused = run("train", "--resume", run_dir, "--seed", 3, ok=False)
    assert refused.exit_code == 2 and "--seed" in refused.output
    out = run("train", "--resume", run_dir, "--device", "cpu", "--quiet").output
    assert str(run_dir) in out and "after 3 epochs" in out
    full = fit(cfg, runs_dir=tmp_path / "full", quiet=True)
    assert json.loads((run_dir / "results.json").read_text())["test"] == full.test
    assert "already completed" in run("train", "--resume", run_dir, ok=False).output


@pytest.mark.parametrize("args,needle", [
    (["train", "--dataset", "/nonexistent/folder", "--model", "mf"], "/nonexistent/folder"),
    (["train", "--model", "mf", "--set", "train.bogus=1"], "train.bogus"),
    (["train", "--model", "mf", "--set", "train.epochs=many"], "train.epochs"),
    (["train", "--model", "nosuchmodel"], "nosuchmodel"),
    (["train", "--model", "mf", "--config", "/nonexistent.yaml"], "/nonexistent.yaml"),
    (["evaluate", "."], "checkpoint"),
])
def test_user_errors_are_one_line_messages(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(*args, ok=False)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert needle in result.output


def test_config_file_and_set_reach_the_run(tmp_path):
    data_dir = write_tiny_dataset(tmp_path / "tiny")
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text(yaml.safe_dump({"mf": {"embedding_size": 8}, "train": {"epochs": 1}}))
    run("train", "--dataset", data_dir, "--model", "mf", "--config", cfg_file, "--runs-dir",
        tmp_path / "runs", "--set", "mf.reg_weight=0.5", *FAST)
    cfg = load_config(only_run(tmp_path / "runs") / "config.yaml")
    assert (cfg.params.embedding_size, cfg.params.reg_weight, cfg.train.epochs) == (8, 0.5, 1)


def test_models_and_version():
    out = run("models").output
    for name in registry.names():
        assert f"{name}:" in out
    assert "mf.embedding_size" in out and "int" in out and "64" in out
    assert "Matrix factorisation with the BPR pairwise loss." in out
    assert "mf.reg_weight" in run("models", "mf").output
    assert run("models", "nosuch", ok=False).exit_code == 2
    assert __version__ in run("--version").output
    helptext = run("--help").output
    for command in ("train", "evaluate", "models"):
        assert command in helptext


@pytest.mark.skipif("rearm" not in registry.names(), reason="REARM is not registered yet")
def test_rearm_two_epochs_logs_every_loss_part(tmp_path):
    data_dir = write_tiny_dataset(tmp_path / "tiny")
    runs = tmp_path / "runs"
    run("train", "--dataset", data_dir, "--epochs", 2, "--runs-dir", runs,
        "--set", "graph.user_knn_k=5", "--set", "graph.item_knn_k=5", "--device", "cpu",
        "--quiet")
    run_dir = only_run(runs)
    res = json.loads((run_dir / "results.json").read_text())
    assert res["model"] == "rearm" and res["epochs_run"] == 2
    tb = scalars(run_dir)
    for tag in ("loss/total", "loss/bpr", "loss/cl", "loss/orth", "valid/Recall@20"):
        assert [step for step, _ in tb[tag]] == [1, 2], tag
    assert "matches results.json" in run("evaluate", run_dir).output


def _demo_preset() -> dict | None:
    from importlib import resources

    table = yaml.safe_load(resources.files("rearm_dgl.presets").joinpath("rearm.yaml").read_text())
    return (table or {}).get("demo")


@pytest.mark.slow
def test_train_with_no_arguments_beats_popularity_on_demo(tmp_path, monkeypatch):
    """`rearm-dgl train` alone: REARM on the demo data, clearly above a popularity ranking."""
    assert _demo_preset(), "presets/rearm.yaml needs a demo entry that finishes in minutes"
    from rearm_dgl.config import DataConfig, EvalConfig
    from rearm_dgl.data import load_dataset
    from rearm_dgl.evaluation import evaluate, popularity_scorer

    monkeypatch.chdir(tmp_path)
    out = run("train").output
    run_dir = only_run(tmp_path / "runs")
    assert run_dir.parent == tmp_path / "runs" / "demo" / "rearm"
    res = json.loads((run_dir / "results.json").read_text())
    data = load_dataset(DataConfig())
    pop = evaluate(popularity_scorer(data), data, "test", EvalConfig()).metrics
    print(f"demo: REARM test {res['test']} in {res['wall_seconds']:.0f} s over "
          f"{res['epochs_run']} epochs; popularity {pop}")
    assert res["test"]["Recall@20"] >= 1.3 * pop["Recall@20"]
    assert res["test"]["NDCG@20"] >= 1.3 * pop["NDCG@20"]
    assert res["features_note"] == data.features_note != ""
    assert "features: " in out
