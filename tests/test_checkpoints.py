"""Checkpoint retention, the checkpoint interval, resume, the run lock and results.json's
efficiency object."""

from __future__ import annotations

import json

import pytest
import torch

from rearm_dgl import checkpoints, tracking
from rearm_dgl import train as train_mod
from rearm_dgl.config import build_config
from rearm_dgl.errors import ConfigError, DataError
from rearm_dgl.train import fit, rescore

CKPTS = {"checkpoint_best.pt", "checkpoint_last.pt"}


def mf_config(dataset, *sets):
    return build_config("mf", str(dataset), overrides=[
        "train.epochs=5", "train.batch_size=64", "train.lr=0.05", "train.device=cpu",
        "train.patience=10", "mf.embedding_size=8", *sets])


def read_lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def checkpoint_files(run_dir) -> set[str]:
    return {p.name for p in run_dir.iterdir() if p.suffix == ".pt"}


def interrupted_run(cfg, runs_dir, data, at_epoch: int):
    """Train ``cfg`` until a KeyboardInterrupt after epoch ``at_epoch``; the run folder."""
    def stop(epoch, valid):
        if epoch == at_epoch:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, runs_dir=runs_dir, data=data, callbacks=[stop], quiet=True)
    (run_dir,) = runs_dir.glob("*/*/*")
    return run_dir


class FakeClock:
    """Wall time for the checkpoint interval: one minute per epoch, advanced by a callback."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def tick(self, epoch, valid):
        self.now += 60.0


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(train_mod, "_clock", fake)
    return fake


@pytest.fixture
def saves(monkeypatch):
    """Every checkpoint write as ``(file name, epoch)``."""
    calls = []
    real = train_mod.save_checkpoint

    def spy(path, state):
        calls.append((path.name, state["epoch"]))
        real(path, state)

    monkeypatch.setattr(train_mod, "save_checkpoint", spy)
    return calls


# ---------------------------------------------------------------------------------------
# When checkpoints are written


def test_checkpoints_follow_the_interval_not_the_epochs(tiny_data, tmp_path, clock, saves):
    # One minute per epoch, an interval of two: checkpoint_last.pt after epochs 3 and 5
    # (the first epoch that ends two minutes after the previous write), never the best
    # weights while the run goes, and checkpoint_best.pt once at the end.
    result = fit(mf_config(tiny_data.source, "train.checkpoint_minutes=2",
                           "train.keep_checkpoints=all"),
                 runs_dir=tmp_path, data=tiny_data, callbacks=[clock.tick], quiet=True)
    assert saves == [("checkpoint_last.pt", 3), ("checkpoint_last.pt", 5),
                     ("checkpoint_best.pt", result.best_epoch)]


def test_default_interval_writes_nothing_during_a_short_run(tiny_data, tmp_path, saves):
    # Ten minutes by default: a short run writes one file, the one its policy keeps.
    result = fit(mf_config(tiny_data.source), runs_dir=tmp_path, data=tiny_data, quiet=True)
    assert saves == [("checkpoint_best.pt", result.best_epoch)]


# ---------------------------------------------------------------------------------------
# What a completed run keeps


@pytest.mark.parametrize("policy", ["best", "last", "all", "none"])
def test_a_completed_run_keeps_only_what_its_policy_keeps(tiny_data, tmp_path, clock, policy):
    cfg = mf_config(tiny_data.source, "train.checkpoint_minutes=0",
                    f"train.keep_checkpoints={policy}")
    result = fit(cfg, runs_dir=tmp_path, data=tiny_data, callbacks=[clock.tick], quiet=True)
    assert checkpoint_files(result.run_dir) == set(checkpoints.KEPT[policy])
    assert not [p for p in result.run_dir.iterdir() if p.name.endswith(".tmp")]
    if policy == "none":
        with pytest.raises(DataError, match="(?s)keep_checkpoints is 'none'.*keep_checkpoints=best"):
            rescore(result.run_dir, data=tiny_data)
    else:  # "last" keeps the best weights inside checkpoint_last.pt
        assert rescore(result.run_dir, data=tiny_data).metrics == result.test
    if policy in ("last", "all"):
        last = checkpoints.load_checkpoint(result.run_dir / "checkpoint_last.pt")
        assert last["epoch"] == result.epochs_run and last["stop_reason"] == result.stop_reason


def test_a_callback_that_stops_the_run_leaves_nothing_under_policy_none(tiny_data, tmp_path):
    def prune(epoch, valid):
        if epoch == 2:
            raise RuntimeError("pruned")

    for policy, left in (("none", set()), ("best", {"checkpoint_last.pt"})):
        runs = tmp_path / policy
        cfg = mf_config(tiny_data.source, "train.checkpoint_minutes=0",
                        f"train.keep_checkpoints={policy}")
        with pytest.raises(RuntimeError, match="pruned"):
            fit(cfg, runs_dir=runs, data=tiny_data, callbacks=[prune], quiet=True)
        (run_dir,) = runs.glob("*/*/*")
        assert checkpoint_files(run_dir) == left, policy


# ---------------------------------------------------------------------------------------
# Resume


@pytest.mark.parametrize("minutes,stop_at,resumed_at", [
    (10, 2, 0),  # killed before the first checkpoint: config.yaml is all that epoch 0 needs
    (0, 2, 2),   # a checkpoint after every epoch
    (2, 4, 3),   # killed between the interval checkpoints of epochs 3 and 5
    (2, 5, 5),   # killed right after one
])
def test_resume_after_a_kill_matches_an_uninterrupted_run(
        tiny_data, tmp_path, monkeypatch, minutes, stop_at, resumed_at):
    cfg = mf_config(tiny_data.source, f"train.checkpoint_minutes={minutes}", "train.epochs=6")
    full = fit(cfg, runs_dir=tmp_path / "full", data=tiny_data, quiet=True)

    clock = FakeClock()
    monkeypatch.setattr(train_mod, "_clock", clock)

    def kill(epoch, valid):
        clock.tick(epoch, valid)
        if epoch == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, runs_dir=tmp_path / "cut", data=tiny_data, callbacks=[kill], quiet=True)
    (run_dir,) = (tmp_path / "cut").glob("*/*/*")
    assert not (run_dir / "results.json").exists()
    # No best file mid-run; checkpoint_last.pt once the first interval has passed.
    assert checkpoint_files(run_dir) == ({"checkpoint_last.pt"} if resumed_at else set())
    assert len(read_lines(run_dir)) == stop_at  # logged past the last checkpoint
    resumed = fit(resume=run_dir, data=tiny_data, quiet=True)

    assert resumed.run_dir == run_dir
    assert (resumed.valid, resumed.test, resumed.best_epoch) == (
        full.valid, full.test, full.best_epoch)
    lines, full_lines = read_lines(run_dir), read_lines(full.run_dir)
    assert [r["epoch"] for r in lines] == list(range(1, 7))  # no duplicates after truncation
    assert [r["loss"] for r in lines] == [r["loss"] for r in full_lines]
    assert [r["valid"] for r in lines] == [r["valid"] for r in full_lines]
    assert json.loads((run_dir / "env.json").read_text())["resumed_at_epoch"] == resumed_at
    assert checkpoint_files(run_dir) == {"checkpoint_best.pt"}
    best = checkpoints.load_checkpoint(run_dir / "checkpoint_best.pt")
    reference = checkpoints.load_checkpoint(full.run_dir / "checkpoint_best.pt")
    assert best["epoch"] == full.best_epoch
    for key, value in reference["model"].items():
        assert torch.equal(best["model"][key], value)


def test_resume_restores_best_weights_older_than_the_checkpoint(tiny_data, tmp_path, clock,
                                                                monkeypatch):
    # Validation peaks at epoch 2; the checkpoint after epoch 4 carries epoch 2's weights,
    # and the resumed run tests exactly those.
    from rearm_dgl.evaluation import EvalResult

    snapshots, scripted = {}, {1: 0.1, 2: 0.5, 3: 0.2, 4: 0.2, 5: 0.2, 6: 0.2}
    counter = {"valid": 0}

    def fake_evaluate(model, data, split, eval_cfg, device):
        if split == "valid":
            counter["valid"] += 1
            value = scripted[counter["valid"]]
            snapshots[counter["valid"]] = model.user_emb.detach().clone()
        else:
            snapshots["test"] = model.user_emb.detach().clone()
            value = 0.5
        return EvalResult({"Recall@10": value, "Recall@20": value}, {}, torch.arange(0).numpy())

    monkeypatch.setattr(train_mod, "evaluate", fake_evaluate)
    monkeypatch.setattr(train_mod, "model_scorer", lambda model: model)
    monkeypatch.setattr(tracking, "write_per_user_test", lambda run_dir, result: None)

    def kill(epoch, valid):
        clock.tick(epoch, valid)
        if epoch == 5:
            raise KeyboardInterrupt

    cfg = mf_config(tiny_data.source, "train.checkpoint_minutes=3", "train.epochs=6")
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, runs_dir=tmp_path / "runs", data=tiny_data, callbacks=[kill], quiet=True)
    (run_dir,) = (tmp_path / "runs").glob("*/*/*")
    last = checkpoints.load_checkpoint(run_dir / "checkpoint_last.pt")
    assert last["epoch"] == 4 and last["early_stopping"]["best_epoch"] == 2
    assert torch.equal(last["best_model"]["user_emb"], snapshots[2])
    counter["valid"] = 4  # the resumed run validates epochs 5 and 6 again
    result = fit(resume=run_dir, data=tiny_data, quiet=True)
    assert result.best_epoch == 2
    assert torch.equal(snapshots["test"], snapshots[2])


def test_a_held_run_cannot_be_resumed_by_a_second_trainer(tiny_data, tmp_path):
    cfg = mf_config(tiny_data.source, "train.checkpoint_minutes=0")

    def stop(epoch, valid):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, runs_dir=tmp_path / "runs", data=tiny_data, callbacks=[stop], quiet=True)
    (run_dir,) = (tmp_path / "runs").glob("*/*/*")
    with tracking.hold_run_dir(run_dir):
        with pytest.raises(ConfigError, match="another process is training this run"):
            fit(resume=run_dir, data=tiny_data, quiet=True)
    assert [r["epoch"] for r in read_lines(run_dir)] == [1, 2]  # untouched
    assert fit(resume=run_dir, data=tiny_data, quiet=True).epochs_run == 5


def test_corrupt_checkpoint_message_names_the_file_without_torch_advice(tmp_path):
    path = tmp_path / "checkpoint_last.pt"
    torch.save({"format": 3, "model": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])  # torn by a crash
    with pytest.raises(DataError) as err:
        checkpoints.load_checkpoint(path)
    assert str(path) in str(err.value) and "truncated or damaged" in str(err.value)
    assert "weights_only" not in str(err.value)


# ---------------------------------------------------------------------------------------
# results.json efficiency


def test_results_record_efficiency(tiny_data, tmp_path):
    result = fit(mf_config(tiny_data.source, "train.epochs=3"), runs_dir=tmp_path,
                 data=tiny_data, quiet=True)
    eff = json.loads((result.run_dir / "results.json").read_text())["efficiency"]
    assert set(eff) == {"epoch_seconds", "eval_seconds", "peak_rss_bytes", "peak_gpu_bytes",
                        "n_parameters"}
    lines = read_lines(result.run_dir)
    train_s = sorted(r["train_seconds"] for r in lines)
    eval_s = sorted(r["eval_seconds"] for r in lines)
    assert eff["epoch_seconds"] == train_s[1] and eff["eval_seconds"] == eval_s[1]  # medians
    assert all(r["train_seconds"] + r["eval_seconds"] <= r["seconds"] + 1e-6 for r in lines)
    assert eff["n_parameters"] == (tiny_data.n_users + tiny_data.n_items) * 8
    assert eff["peak_gpu_bytes"] is None  # on the CPU
    assert 10 * 2**20 < eff["peak_rss_bytes"] < 64 * 2**30


def test_a_run_checkpointed_by_the_previous_format_still_resumes(tiny_data, tmp_path):
    # Format 2 kept the best weights only in checkpoint_best.pt, written on each improvement.
    cfg = mf_config(tiny_data.source, "train.checkpoint_minutes=0", "train.epochs=8")
    full = fit(cfg, runs_dir=tmp_path / "full", data=tiny_data, quiet=True)
    run_dir = interrupted_run(cfg, tmp_path / "cut", tiny_data, 6)
    last = checkpoints.load_checkpoint(run_dir / "checkpoint_last.pt")
    best = last.pop("best_model")
    assert best is not None  # epoch 6 is not the best (4 is): the old best file is needed
    config = {**last["config"], "train": {**last["config"]["train"], "checkpoint_every": 1}}
    for key in ("keep_checkpoints", "checkpoint_minutes"):
        del config["train"][key]
    torch.save({**last, "format": 2, "config": config}, run_dir / "checkpoint_last.pt")
    torch.save({"format": 2, "config": config, "epoch": last["early_stopping"]["best_epoch"],
                "model": best, "valid": last["best_valid"]}, run_dir / "checkpoint_best.pt")
    resumed = fit(resume=run_dir, data=tiny_data, quiet=True)
    assert (resumed.valid, resumed.test, resumed.best_epoch) == (
        full.valid, full.test, full.best_epoch)


@pytest.mark.parametrize("model,sets", [
    ("rearm", []),  # its feature tables are stepped by rows, the first step included
    ("mgcn", ["mgcn.lr_decay=0.5", "mgcn.lr_decay_epochs=1"]),  # a decaying learning rate
])
def test_resume_with_every_parameter_stepped_in_the_backward_matches(
        tiny_data, tmp_path, monkeypatch, model, sets):
    """With every parameter stepped inside the backward (tiny tables are below the 1M
    elements that switch it on), a resumed run equals an uninterrupted one: the restored
    optimiser's groups and state are the ones the in-backward steps use."""
    from rearm_dgl import optim

    original = optim.step_in_backward
    monkeypatch.setattr(train_mod, "step_in_backward", lambda opt: original(opt, 1))
    cfg = build_config(model, str(tiny_data.source), overrides=[
        "train.epochs=4", "train.batch_size=64", "train.device=cpu",
        "train.checkpoint_minutes=0", "train.patience=10", *sets])
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: bit-for-bit repeatable
    try:
        full = fit(cfg, runs_dir=tmp_path / "full", data=tiny_data, quiet=True)
        run_dir = interrupted_run(cfg, tmp_path / "cut", tiny_data, 2)
        resumed = fit(resume=run_dir, data=tiny_data, quiet=True)
    finally:
        torch.set_num_threads(before)
    assert [r["loss"] for r in read_lines(run_dir)] == [r["loss"] for r in
                                                         read_lines(full.run_dir)]
    assert (resumed.valid, resumed.test) == (full.valid, full.test)
