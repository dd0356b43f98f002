"""LATTICE, DRAGON and MGCN through the CLI and their presets, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rearm_dgl.cli import main
from rearm_dgl.config import build_config
from rearm_dgl.tuning import load_space

MODELS = ("lattice", "dragon", "mgcn")
STUDIES = Path(__file__).resolve().parents[1] / "rearm_dgl" / "studies"


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_models_command_lists_them():
    out = run("models").output
    for name in MODELS:
        assert name in out


@pytest.mark.parametrize("name", MODELS)
def test_train_two_epochs_on_tiny_data(name, tiny_dataset, tmp_path):
    run("train", "-m", name, "-d", tiny_dataset, "--epochs", 2, "--runs-dir", tmp_path / "runs",
        "--device", "cpu", "--quiet", "--set", "train.batch_size=64")
    (results,) = (tmp_path / "runs").glob(f"*/{name}/*/results.json")
    res = json.loads(results.read_text())
    assert res["epochs_run"] == 2 and res["status"] == "completed"


@pytest.mark.parametrize("name", MODELS)
def test_presets_hold_the_reference_values_and_a_point_of_the_grid(name):
    for dataset in ("baby", "sports", "clothing"):
        cfg = build_config(name, dataset)
        assert cfg.train.batch_size == 2048 and cfg.train.negatives == "train_only"
        assert cfg.params.embedding_size == 64 and cfg.graph.item_knn_k == 10
        assert cfg.eval.stop_decimals == 4
        space = load_space(STUDIES / f"{name}.yaml", name)
        space.preset_params(cfg)  # raises if the preset is not a point of MMRec's grid
    assert build_config(name, "demo").eval.stop_decimals is None
    assert build_config("dragon", "clothing").params.reg_weight == 0.1


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_demo_preset_beats_popularity(name, tmp_path):
    from rearm_dgl.config import DataConfig, EvalConfig
    from rearm_dgl.data import load_dataset
    from rearm_dgl.evaluation import evaluate, popularity_scorer
    from rearm_dgl.train import fit

    data = load_dataset(DataConfig())
    res = fit(build_config(name, "demo", overrides=["train.device=cpu"]), runs_dir=tmp_path,
              data=data, quiet=True)
    pop = evaluate(popularity_scorer(data), data, "test", EvalConfig()).metrics
    assert res.test["Recall@20"] >= 1.3 * pop["Recall@20"]
    assert res.test["NDCG@20"] >= 1.3 * pop["NDCG@20"]
