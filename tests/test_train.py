"""The training loop: early stopping, NaN stop, determinism, resume, run directory."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rearm_dgl import tracking
from rearm_dgl import train as train_mod
from rearm_dgl.config import build_config
from rearm_dgl.errors import ConfigError, DataError
from rearm_dgl.evaluation import EvalResult
from rearm_dgl.models.mf import MF
from rearm_dgl.train import EarlyStopping, fit, rescore


def mf_config(dataset, *sets):
    return build_config("mf", str(dataset), overrides=[
        "train.epochs=4", "train.batch_size=64", "train.lr=0.05", "train.device=cpu",
        "train.patience=10", *sets])


def read_lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------
# Early stopping


def test_early_stopping_stops_at_patience_plus_one_non_improving_epoch():
    stopper = EarlyStopping(patience=2)
    history = []
    for epoch, value in enumerate([0.1, 0.3, 0.3, 0.2, 0.25, 0.9], start=1):
        history.append((stopper.update(value, epoch), stopper.should_stop))
        if stopper.should_stop:
            break
    # An equal value is not an improvement; the third non-improving epoch (5) stops.
    assert history == [(True, False), (True, False), (False, False), (False, False),
                       (False, True)]
    assert (stopper.best, stopper.best_epoch, stopper.bad_epochs) == (0.3, 2, 3)
    restored = EarlyStopping(2)
    restored.load_state_dict(stopper.state_dict())
    assert restored.state_dict() == stopper.state_dict()


def test_rounded_early_stopping_treats_gains_below_the_last_decimal_as_ties():
    # MMRec's FREEDOM case: epoch 5 is better than epoch 4 only in the fifth decimal.
    values = [0.0600, 0.06219, 0.06221, 0.06224, 0.06218, 0.0610]
    raw, rounded = EarlyStopping(patience=1), EarlyStopping(patience=1, decimals=4)
    stops = {}
    for name, stopper in (("raw", raw), ("rounded", rounded)):
        for epoch, value in enumerate(values, start=1):
            stopper.update(value, epoch)
            if stopper.should_stop:
                stops[name] = epoch
                break
    # Raw: 2, 3, 4 improve, 5 and 6 do not -> stop at 6, best 4.
    # Rounded: 0.0622 at 2, 3, 4 and 5 is one value -> best 2, stop at 4.
    assert (raw.best_epoch, stops["raw"]) == (4, 6)
    assert (rounded.best_epoch, stops["rounded"]) == (2, 4)
    assert rounded.best == 0.0622
    restored = EarlyStopping(1, decimals=4)
    restored.load_state_dict(rounded.state_dict())
    assert restored.state_dict() == rounded.state_dict()


def scripted_validation(monkeypatch, scripted: dict[int, float]):
    """Make fit() see ``scripted[epoch]`` as every validation metric (test: 0.5)."""
    calls = []

    def fake_evaluate(model, data, split, eval_cfg, device):
        if split == "valid":
            epoch = sum(1 for s in calls if s == "valid") + 1
            value = scripted[epoch]
        else:
            value = 0.5
        calls.append(split)
        return EvalResult({"Recall@10": value, "Recall@20": value}, {}, torch.arange(0).numpy())

    monkeypatch.setattr(train_mod, "evaluate", fake_evaluate)
    monkeypatch.setattr(train_mod, "model_scorer", lambda model: model)
    monkeypatch.setattr(tracking, "write_per_user_test", lambda run_dir, result: None)
    return calls


@pytest.mark.parametrize("decimals,best_epoch,epochs_run", [(None, 4, 7), (4, 2, 5)])
def test_eval_stop_decimals_changes_the_stopping_epoch_of_fit(
        tiny_data, tmp_path, monkeypatch, decimals, best_epoch, epochs_run):
    scripted = dict(enumerate([0.30, 0.31001, 0.31003, 0.31004, 0.31, 0.31, 0.30, 0.2, 0.2],
                              start=1))
    scripted_validation(monkeypatch, scripted)
    cfg = mf_config(tiny_data.source, "train.patience=2", "train.epochs=9",
                    f"eval.stop_decimals={'null' if decimals is None else decimals}")
    result = fit(cfg, runs_dir=tmp_path, data=tiny_data, quiet=True)
    assert (result.best_epoch, result.epochs_run) == (best_epoch, epochs_run)
    # results.json keeps the raw metric of the chosen epoch.
    assert result.valid["Recall@20"] == scripted[best_epoch]


def test_fit_stops_early_and_tests_the_best_epoch(tiny_data, tmp_path, monkeypatch):
    scripted = {1: 0.1, 2: 0.3, 3: 0.2, 4: 0.3, 5: 0.25, 6: 0.9, 7: 0.9}
    calls = []
    snapshots = {}

    def fake_scorer(model):
        return model

    def fake_evaluate(model, data, split, eval_cfg, device):
        snapshot = model.user_emb.detach().clone()
        if split == "valid":
            epoch = sum(1 for s, _ in calls if s == "valid") + 1
            snapshots[epoch] = snapshot
            value = scripted[epoch]
        else:
            snapshots["test"] = snapshot
            value = 0.5
        calls.append((split, value))
        metrics = {"Recall@10": value, "Recall@20": value}
        return EvalResult(metrics, {}, torch.arange(0).numpy())

    monkeypatch.setattr(train_mod, "evaluate", fake_evaluate)
    monkeypatch.setattr(train_mod, "model_scorer", fake_scorer)
    monkeypatch.setattr(tracking, "write_per_user_test", lambda run_dir, result: None)
    cfg = mf_config(tiny_data.source, "train.patience=2", "train.epochs=20")
    result = fit(cfg, runs_dir=tmp_path, data=tiny_data, quiet=True)

    # Epochs 3, 4, 5 do not improve on 0.3 (epoch 4 only equals it): stop at epoch 5.
    assert result.stop_reason == "early_stopping"
    assert (result.best_epoch, result.epochs_run) == (2, 5)
    assert [s for s, _ in calls] == ["valid"] * 5 + ["test"]  # test scored once, at the end
    assert torch.equal(snapshots["test"], snapshots[2])
    assert not torch.equal(snapshots["test"], snapshots[5])
    assert result.valid["Recall@20"] == 0.3
    assert [r["epoch"] for r in read_lines(result.run_dir)] == [1, 2, 3, 4, 5]
    best = train_mod.load_checkpoint(result.run_dir / "checkpoint_best.pt")
    assert best["epoch"] == 2
    assert torch.equal(best["model"]["user_emb"], snapshots[2])


# ---------------------------------------------------------------------------------------
# NaN loss


@pytest.mark.parametrize("nan_from_epoch", [3, 1])
def test_nan_loss_stops_and_keeps_the_best_result(tiny_data, tmp_path, monkeypatch,
                                                  nan_from_epoch):
    real_loss = MF.loss
    n_calls = {"n": 0}

    def loss(self, batch):
        n_calls["n"] += 1
        out = real_loss(self, batch)
        if n_calls["n"] > (nan_from_epoch - 1):  # one batch per epoch below
            out.total = out.total * float("nan")
        return out

    monkeypatch.setattr(MF, "loss", loss)
    cfg = mf_config(tiny_data.source, "train.batch_size=100000", "train.epochs=6")
    result = fit(cfg, runs_dir=tmp_path, data=tiny_data, quiet=True)

    assert result.stop_reason == "nan_loss"
    assert result.epochs_run == nan_from_epoch - 1
    assert result.best_epoch <= nan_from_epoch - 1
    saved = json.loads((result.run_dir / "results.json").read_text())
    assert saved["stop_reason"] == "nan_loss" and saved["status"] == "completed"
    assert all(math.isfinite(v) for v in saved["test"].values())
    assert set(saved["valid"]) == set(saved["test"])
    assert len(read_lines(result.run_dir)) == nan_from_epoch - 1
    assert (result.run_dir / "checkpoint_best.pt").exists()


# ---------------------------------------------------------------------------------------
# Determinism and resume


def test_training_parts_hands_back_the_dataset_without_features():
    # fit keeps only the returned dataset, so the features' memory goes once the model
    # holds its own copy.
    from rearm_dgl.data import load_demo
    from rearm_dgl.graphs import load_or_build_graph

    demo = load_demo()
    cfg = build_config("rearm", "demo")
    model, _, _, data = train_mod.training_parts(
        cfg, demo, load_or_build_graph(demo, cfg.graph), torch.device("cpu"))
    assert demo.image_feat is not None and data.image_feat is None
    assert data.train is demo.train and data.fingerprint == demo.fingerprint
    torch.testing.assert_close(model.item_image.detach(), torch.from_numpy(demo.image_feat))


def test_same_seed_gives_identical_metrics(tiny_data, tmp_path):
    cfg = mf_config(tiny_data.source, "train.epochs=2")
    a = fit(cfg, runs_dir=tmp_path, data=tiny_data, quiet=True)
    b = fit(cfg, runs_dir=tmp_path, data=tiny_data, quiet=True)
    c = fit(mf_config(tiny_data.source, "train.epochs=2", "train.seed=7"), runs_dir=tmp_path,
            data=tiny_data, quiet=True)
    assert a.run_dir != b.run_dir  # same second, same seed: still two folders
    assert (a.valid, a.test) == (b.valid, b.test)
    assert [r["loss"] for r in read_lines(a.run_dir)] == [r["loss"] for r in read_lines(b.run_dir)]
    assert [r["loss"] for r in read_lines(a.run_dir)] != [r["loss"] for r in read_lines(c.run_dir)]
    fp = json.loads((a.run_dir / "results.json").read_text())["config_fingerprint"]
    assert fp == json.loads((c.run_dir / "results.json").read_text())["config_fingerprint"]


class Stop(Exception):
    pass


def test_callback_exception_propagates_and_resume_refuses_bad_requests(tiny_data, tmp_path):
    cfg = mf_config(tiny_data.source, "train.checkpoint_minutes=0")

    def prune(epoch, valid):
        assert set(valid) >= {"Recall@20", "NDCG@10"}
        raise Stop

    with pytest.raises(Stop):
        fit(cfg, runs_dir=tmp_path / "runs", data=tiny_data, callbacks=[prune], quiet=True)
    (run_dir,) = (tmp_path / "runs").glob("*/*/*")
    with pytest.raises(ConfigError, match=r"train.lr is 0.01, the run started with 0.05"):
        fit(mf_config(tiny_data.source, "train.lr=0.01"), resume=run_dir, data=tiny_data)
    fit(cfg, resume=run_dir, data=tiny_data, quiet=True)
    with pytest.raises(ConfigError, match="already completed"):
        fit(resume=run_dir, data=tiny_data)
    with pytest.raises(ConfigError, match="already holds a run"):
        fit(cfg, run_dir=run_dir, data=tiny_data)
    with pytest.raises(ConfigError, match="no checkpoint_last.pt"):
        (tmp_path / "empty").mkdir()
        fit(resume=tmp_path / "empty")


def test_rescore_reproduces_results(tiny_data, tmp_path):
    result = fit(mf_config(tiny_data.source, "train.epochs=2"), runs_dir=tmp_path,
                 data=tiny_data, quiet=True)
    assert rescore(result.run_dir, "test", data=tiny_data).metrics == result.test
    assert rescore(result.run_dir, "valid", data=tiny_data).metrics == result.valid


# ---------------------------------------------------------------------------------------
# Run directory helpers


def test_config_fingerprint_ignores_seed_device_and_folders(tiny_dataset):
    base = mf_config(tiny_dataset)
    same = mf_config(tiny_dataset, "train.seed=1", "train.device=auto", "data.cache_dir=/x",
                     "data.data_root=/y")
    assert tracking.config_fingerprint(base) == tracking.config_fingerprint(same)
    assert tracking.config_fingerprint(base) == tracking.config_fingerprint(base.to_dict())
    assert tracking.config_fingerprint(base) != tracking.config_fingerprint(
        mf_config(tiny_dataset, "train.lr=0.01"))
    assert tracking.config_fingerprint(base) != tracking.config_fingerprint(
        mf_config(tiny_dataset, "mf.embedding_size=8"))


def test_new_run_dirs_are_unique_and_named_by_dataset_model_seed(tmp_path):
    dirs = [tracking.new_run_dir(tmp_path, "/some/path/baby/", "rearm", 3) for _ in range(3)]
    assert len(set(dirs)) == 3
    assert all(d.parent == tmp_path / "baby" / "rearm" for d in dirs)
    assert dirs[0].name.endswith("-s3") and dirs[1].name.endswith("-s3-2")


def test_truncate_metrics_keeps_earlier_epochs_and_skips_torn_lines(tmp_path):
    for epoch in (1, 2, 3):
        tracking.append_metrics(tmp_path, {"epoch": epoch, "loss": {"total": 1.0 / epoch}})
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 4, "lo')  # a line torn by a crash
    assert [r["epoch"] for r in tracking.read_metrics(tmp_path)] == [1, 2, 3]
    tracking.truncate_metrics(tmp_path, 2)
    assert [r["epoch"] for r in tracking.read_metrics(tmp_path)] == [1, 2]


def test_model_needing_features_is_refused_on_id_only_data(tmp_path):
    from conftest import write_tiny_dataset

    from rearm_dgl.models import registry

    needs = [n for n in registry.names() if registry.get(n).needs_features]
    if not needs:
        pytest.skip("no registered model needs features")
    folder = write_tiny_dataset(tmp_path / "idonly", features=False)
    cfg = build_config(needs[0], str(folder), overrides=["train.device=cpu"])
    with pytest.raises(DataError, match="needs image and text features"):
        fit(cfg, runs_dir=tmp_path, quiet=True)
