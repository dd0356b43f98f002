"""BM3, SLMRec and LGMRec end to end: the CLI, their presets and their search spaces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import write_tiny_dataset

from rearm_dgl import tuning
from rearm_dgl.cli import main
from rearm_dgl.config import build_config

REPO = Path(__file__).resolve().parents[1]
MODELS = ("bm3", "slmrec", "lgmrec")


def study(name: str) -> Path:
    """A shipped study file (package data)."""
    return REPO / "rearm_dgl" / "studies" / name


def run(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("model", MODELS)
def test_train_two_epochs_then_rescore_matches(model, tmp_path):
    data_dir = write_tiny_dataset(tmp_path / "tiny")
    runs = tmp_path / "runs"
    run("train", "--dataset", data_dir, "--model", model, "--epochs", 2, "--runs-dir", runs,
        "--device", "cpu", "--set", "train.batch_size=64", "--set", "train.lr=0.01", "--quiet")
    (run_dir,) = [p for p in runs.glob("*/*/*") if p.is_dir()]
    res = json.loads((run_dir / "results.json").read_text())
    assert res["model"] == model and res["epochs_run"] == 2
    # Evaluation is reproducible from the checkpoint, LGMRec's Gumbel noise included.
    assert "matches results.json" in run("evaluate", run_dir).output
    assert f"{model}:" in run("models").output


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("dataset", ["baby", "sports", "clothing", "demo"])
def test_presets_lie_in_the_shipped_search_space(model, dataset):
    cfg = build_config(model, dataset)
    space = tuning.load_space(study(f"{model}.yaml"), model=model)
    space.check_against(cfg)
    space.preset_params(cfg)  # raises if the preset is outside the space
    paper = dataset != "demo"
    assert (cfg.eval.stop_decimals == 4) is paper
    assert cfg.train.batch_size == 2048 and cfg.params.embedding_size == 64


def test_mmrec_grids_and_per_dataset_points():
    assert len(tuning.load_space(study("bm3.yaml"), model="bm3").keys) == 3
    assert build_config("bm3", "sports").params.reg_weight == 0.01
    assert build_config("lgmrec", "clothing").params.hyper_num == 64
    # The Sports log ran with 2 user-item layers and 4 hyper layers (the yaml swaps them).
    sports = build_config("lgmrec", "sports").params
    assert (sports.n_ui_layers, sports.n_hyper_layer, sports.alpha) == (2, 4, 0.6)


def test_main_experiments_include_the_models():
    for name in ("main.yaml", "main_tiny.yaml"):
        models = yaml.safe_load(study(name).read_text())["models"]
        assert set(MODELS) <= set(models), name
