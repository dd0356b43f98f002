"""`rearm-dgl tune` in one process: search spaces, the preset trial, outputs, resuming and bad
input that must leave an existing study unchanged."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import write_tiny_dataset

from rearm_dgl import tuning
from rearm_dgl.cli import main
from rearm_dgl.config import build_config, load_config
from rearm_dgl.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TINY_SPACE = REPO / "rearm_dgl" / "studies" / "tiny.yaml"
# The tiny dataset has 40 users: keep the user kNN small; two epochs per trial keep it fast.
FIXED = ["--set", "train.epochs=2", "--set", "graph.user_knn_k=8", "--set", "train.device=cpu",
         "--set", "train.batch_size=128"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared machine run far faster on one thread than on several."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cli(*args, code=0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, (result.output, result.exception)
    return result


def load(study_dir: Path) -> optuna.Study:
    storage = tuning.open_storage(tuning.StorageSpec(None, study_dir / tuning.JOURNAL_FILE))
    return optuna.load_study(study_name=study_dir.name, storage=storage)


def snapshot(study_dir: Path) -> dict[str, str]:
    """Every file under the study folder with its content hash."""
    return {str(p.relative_to(study_dir)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(study_dir.rglob("*")) if p.is_file()}


def fake_runner(cfg, run_dir, callback, progress=None):
    """Stands in for training: a smooth function of the searched values, two epochs."""
    value = 1.0 / (1.0 + abs(cfg.params.cl_tmp - 0.3)) - 0.01 * cfg.params.n_layers
    for epoch in (1, 2):
        callback(epoch, {"Recall@20": value * epoch / 2, "Recall@10": value / 3})
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(valid={"Recall@20": value, "Recall@10": value / 3},
                           test={"Recall@20": value / 2}, best_epoch=2, stop_reason="max_epochs")


# ---------------------------------------------------------------------------------------
# Search spaces


def test_shipped_spaces_hold_every_paper_preset():
    space = tuning.load_space(REPO / "rearm_dgl" / "studies" / "rearm.yaml")
    kinds = {p.type for p in space.params}
    assert kinds == {"float", "int", "categorical"}
    assert any(p.log for p in space.params) and any(p.step for p in space.params
                                                    if p.type == "int")
    for key in ("rearm.n_layers", "rearm.n_uu_layers", "rearm.n_ii_layers", "graph.user_knn_k",
                "graph.item_knn_k", "rearm.uu_co_weight", "rearm.ii_co_weight",
                "rearm.u_mm_image_weight", "rearm.i_mm_image_weight", "rearm.s_drop",
                "rearm.m_drop", "rearm.cl_tmp", "rearm.cl_loss_weight",
                "rearm.diff_loss_weight"):
        assert key in space.keys
    for dataset in ("baby", "sports", "clothing", "demo"):
        cfg = build_config("rearm", dataset)
        space.check_against(cfg)
        params = space.preset_params(cfg)
        assert params["rearm.cl_tmp"] == cfg.params.cl_tmp
        assert params["graph.user_knn_k"] == cfg.graph.user_knn_k
    tiny = tuning.load_space(TINY_SPACE)
    assert {p.type for p in tiny.params} == {"float", "int", "categorical"}


@pytest.mark.parametrize("body, words", [
    ({"rearm.n_layer": {"type": "int", "low": 1, "high": 3}}, ["rearm.n_layer", "rearm.n_layers"]),
    ({"rearm.cl_tmp": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, ["low > 0"]),
    ({"rearm.cl_tmp": {"type": "float", "low": 2.0, "high": 1.0}}, ["low", "high"]),
    ({"rearm.n_layers": {"type": "float", "low": 1, "high": 3}}, ["integer", "type: int"]),
    ({"rearm.use_cl": {"type": "int", "low": 0, "high": 1}}, ["categorical"]),
    ({"rearm.m_drop": {"type": "categorical", "choices": []}}, ["choices"]),
    ({"rearm.m_drop": {"type": "uniform", "low": 0, "high": 1}}, ["type"]),
    ({"rearm.m_drop": {"type": "float", "low": 0, "high": 1, "q": 0.1}}, ["q"]),
    ({"data.dataset": {"type": "categorical", "choices": ["baby"]}}, ["data", "--set"]),
    ({"rearm.n_layers": {"type": "int", "low": 1, "high": 4, "step": 1.5}}, ["step"]),
])
def test_bad_space_entries_name_the_file_and_field(tmp_path, body, words):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(ConfigError) as err:
        tuning.load_space(path)
    message = str(err.value)
    assert str(path) in message and next(iter(body)) in message
    for word in words:
        assert word in message


def test_space_values_are_checked_against_the_config_and_the_preset(tmp_path):
    cfg = build_config("rearm", "baby")
    bad_bound = tuning.parse_space({"graph.user_knn_k": {"type": "int", "low": 0, "high": 4}},
                                   "s.yaml")
    with pytest.raises(ConfigError, match="graph.user_knn_k.*value 0"):
        bad_bound.check_against(cfg)
    narrow = tuning.parse_space({"rearm.cl_tmp": {"type": "float", "low": 0.7, "high": 2.0},
                                 "rearm.m_drop": {"type": "categorical", "choices": [0.1, 0.2]}},
                                "s.yaml")
    with pytest.raises(ConfigError) as err:
        narrow.preset_params(cfg)
    assert "rearm.cl_tmp=0.6" in str(err.value) and "rearm.m_drop=0.6" in str(err.value)
    grid = tuning.ParamSpec("graph.user_knn_k", "int", 10, 50, 5)
    assert grid.contains(40) and not grid.contains(42) and not grid.contains(55)
    assert tuning.ParamSpec("x", "categorical", choices=(True, 1)).contains(True)
    assert not tuning.ParamSpec("x", "categorical", choices=(1,)).contains(True)


# ---------------------------------------------------------------------------------------
# A real study through the CLI


def test_cli_study_preset_trial_outputs_and_best_yaml_trains(tmp_path):
    data_dir = write_tiny_dataset(tmp_path / "baby")  # named baby: the Baby preset applies
    studies = tmp_path / "studies"
    out = cli("tune", "--dataset", data_dir, "--space", TINY_SPACE, "--trials", 4, "--study",
              "s4", "--studies-dir", studies, "--sampler-seed", 1, *FIXED).output
    assert "best: trial" in out
    for n in range(4):  # progress lines tagged with the trial, and its closing line
        assert f"trial {n} epoch 1 valid Recall@20 " in out
        assert f"trial {n}: complete, Recall@20 " in out
    study_dir = studies / "s4"
    study = load(study_dir)
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)

    # Trial 0 is the paper's Baby preset for every searched key.
    baby = build_config("rearm", "baby").params
    assert trials[0].params == {"rearm.n_layers": baby.n_layers, "rearm.cl_tmp": baby.cl_tmp,
                                "rearm.m_drop": baby.m_drop, "graph.item_knn_k": 10}
    assert trials[0].user_attrs["preset"] is True
    # Test metrics are user attributes; the objective is the best validation Recall@20.
    for t in trials:
        assert "test.Recall@20" in t.user_attrs
        assert t.value == pytest.approx(t.user_attrs["valid.Recall@20"])
        assert t.value == pytest.approx(max(t.intermediate_values.values()))
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir == study_dir / "trials" / str(t.number)
        assert (run_dir / "results.json").is_file() and (run_dir / "config.yaml").is_file()
        assert load_config(run_dir / "config.yaml").graph.item_knn_k == t.params[
            "graph.item_knn_k"]

    rows = list(csv.DictReader((study_dir / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == [0, 1, 2, 3]
    assert {"params_rearm.cl_tmp", "user_attrs_test.Recall@20", "value"} <= set(rows[0])
    for name in ("optimization_history", "param_importances", "parallel_coordinate",
                 "intermediate_values"):
        png = study_dir / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert sorted(p.name for p in (study_dir / "tensorboard").iterdir()) == ["0", "1", "2", "3"]
    # Trials are hparams sessions named as training runs are (rearm_dgl.hparams).
    assert all((study_dir / "tensorboard" / str(n) / "hparams").is_dir() for n in range(4))
    assert not list(study_dir.rglob("*.tmp"))

    # best.yaml is the best trial's config and trains as is.
    best = max(trials, key=lambda t: t.value)
    cfg = load_config(study_dir / "best.yaml")
    assert cfg.params.cl_tmp == pytest.approx(best.params["rearm.cl_tmp"])
    assert cfg.graph.user_knn_k == 8 and cfg.train.epochs == 2
    runs = tmp_path / "runs"
    cli("train", "--config", study_dir / "best.yaml", "--epochs", 1, "--runs-dir", runs,
        "--quiet")
    assert len(list(runs.rglob("results.json"))) == 1

    # --summary rewrites the outputs from the storage alone.
    (study_dir / "trials.csv").unlink()
    summary = cli("tune", "--study", "s4", "--studies-dir", studies, "--summary").output
    assert (study_dir / "trials.csv").is_file() and "4 complete" in summary


# ---------------------------------------------------------------------------------------
# Resuming and bad input (a stand-in for training keeps these fast)


@pytest.fixture(scope="module")
def fake_study_template(tmp_path_factory):
    """A 3-trial study made once with the stand-in runner."""
    root = tmp_path_factory.mktemp("fake_study")
    data_dir = write_tiny_dataset(root / "baby")
    studies = root / "studies"
    tuning.run_study("fs", dataset=str(data_dir), space=TINY_SPACE, trials=3, pruner="none",
                     overrides=["graph.user_knn_k=8"], studies_dir=studies,
                     runner=fake_runner, echo=lambda line: None)
    return data_dir, studies


@pytest.fixture
def fake_study(fake_study_template, tmp_path):
    """A private copy of the 3-trial study: (dataset dir, studies dir)."""
    data_dir, studies = fake_study_template
    shutil.copytree(studies, tmp_path / "studies")
    return data_dir, tmp_path / "studies"


def test_rerun_resumes_and_extends_the_budget(fake_study):
    data_dir, studies = fake_study
    study = load(studies / "fs")
    assert len(study.trials) == 3 and study.trials[0].user_attrs["preset"]
    # Same settings, larger budget: two more trials; the preset is not queued again.
    tuning.run_study("fs", dataset=str(data_dir), space=TINY_SPACE, trials=5, pruner="none",
                     overrides=["graph.user_knn_k=8"], studies_dir=studies,
                     runner=fake_runner, echo=lambda line: None)
    study = load(studies / "fs")
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert sum(bool(t.user_attrs.get("preset")) for t in study.trials) == 1
    # Settings left out are taken from the study.
    tuning.run_study("fs", trials=5, studies_dir=studies, runner=fake_runner,
                     echo=lambda line: None)
    assert len(load(studies / "fs").trials) == 5


@pytest.mark.parametrize("args, words", [
    (["--space", "{bad_space}"], ["rearm.n_layer", "bad.yaml"]),
    (["--storage", "postgresql//nohost"], ["--storage", "URL"]),
    (["--storage", "postgres://u:secret@127.0.0.1:5432/db"], ["postgresql://"]),
    (["--storage", "postgresql://u:secret@127.0.0.1:1/db"], ["cannot connect"]),
    (["--trials", "0"], ["--trials 0"]),
    (["--set", "train.lr=-1"], ["train.lr"]),
    (["--set", "rearm.m_drop=0.6"], []),  # changes the stored settings
    (["--dataset", "sports"], ["dataset"]),
])
def test_bad_input_is_a_clear_error_and_changes_no_study(fake_study, tmp_path, args, words):
    data_dir, studies = fake_study
    bad_space = tmp_path / "bad.yaml"
    bad_space.write_text("rearm.n_layer: {type: int, low: 1, high: 3}\n")
    before = snapshot(studies / "fs")
    # The command that created the study, then the bad option (a repeated option wins).
    same = ["--study", "fs", "--studies-dir", studies, "--dataset", data_dir, "--space",
            TINY_SPACE, "--set", "graph.user_knn_k=8", "--trials", 4, "--pruner", "none"]
    result = cli("tune", *same, *[a.replace("{bad_space}", str(bad_space)) for a in args],
                 code=2)
    message = result.output
    assert message.startswith("error: ") and "Traceback" not in message
    assert "secret" not in message
    for word in words:
        assert word in message
    assert snapshot(studies / "fs") == before
    assert len(load(studies / "fs").trials) == 3


def test_summary_of_a_missing_study_is_an_error(tmp_path):
    result = cli("tune", "--study", "nope", "--studies-dir", tmp_path, "--summary", code=2)
    assert "no study named 'nope'" in result.output
    assert not (tmp_path / "nope").exists()


def test_pruned_trials_count_in_the_budget_and_keep_no_test_metrics(tmp_path, monkeypatch):
    data_dir = write_tiny_dataset(tmp_path / "baby")
    # Workers mix their process into the sampler seed; pin it so the points (and therefore
    # whether the median pruner has something to prune) are the same on every run.
    monkeypatch.setattr(tuning.worker, "worker_seed", lambda seed, worker, n_trials: seed)

    def climbing(cfg, run_dir, callback, progress=None):
        # Worse for more layers; pruning needs the values of earlier epochs.
        for epoch in range(1, cfg.train.epochs + 1):
            callback(epoch, {"Recall@20": epoch / cfg.params.n_layers})
        return fake_runner(cfg, run_dir, lambda *a: None)

    result = tuning.run_study("pr", dataset=str(data_dir), space=TINY_SPACE, trials=10,
                              pruner="median", seed=3, studies_dir=tmp_path / "studies",
                              overrides=["graph.user_knn_k=8", "train.epochs=4"],
                              runner=climbing, echo=lambda line: None)
    study = load(tmp_path / "studies" / "pr")
    states = [t.state for t in study.trials]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(states) == 10 and pruned
    assert states.count(optuna.trial.TrialState.COMPLETE) + len(pruned) == 10
    for t in pruned:
        assert not any(k.startswith("test.") for k in t.user_attrs)
        assert max(t.intermediate_values) < 4  # stopped before the last epoch
    assert result.counts["PRUNED"] == len(pruned)
