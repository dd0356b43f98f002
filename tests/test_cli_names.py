"""The command line MMRec and RecBole users know: model names in any case with MMRec's
aliases, "did you mean" for unknown keys, ``python -m rearm_dgl``, and the README's settings
table and Python snippet."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from rearm_dgl.cli import main
from rearm_dgl.config import FOREIGN_KEYS, build_config, load_config
from rearm_dgl.errors import ConfigError
from rearm_dgl.models import registry

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FAST = ["--device", "cpu", "--set", "train.batch_size=256", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# --- model names ------------------------------------------------------------------------


@pytest.mark.parametrize("given,name", [
    ("BPR", "mf"), ("bpr", "mf"), ("BPRMF", "mf"), ("LightGCN", "lightgcn"),
    ("FREEDOM", "freedom"), ("VBPR", "vbpr"), ("REARM", "rearm"), ("Mf", "mf"),
])
def test_mmrec_names_and_any_case_resolve(given, name):
    assert registry.canonical(given) == name
    cfg = build_config(given, "demo")
    assert cfg.model == name and type(cfg.params) is registry.get(name).config_cls
    assert name in cfg.to_dict()  # the YAML section has the registered name


@pytest.mark.parametrize("name", registry.names())
def test_every_registered_model_matches_in_upper_case(name):
    """Models added later get case-insensitive names without a code change."""
    assert registry.canonical(name.upper()) == name


def test_unknown_model_lists_the_choices():
    with pytest.raises(ConfigError, match=r"unknown model 'BPRR'.*'mf'"):
        registry.canonical("BPRR")


def test_train_bpr_one_epoch(tmp_path):
    """`rearm-dgl train -m BPR --epochs 1` trains mf on the demo data."""
    runs = tmp_path / "runs"
    result = invoke("train", "-m", "BPR", "--epochs", 1, "--runs-dir", runs, *FAST)
    assert result.exit_code == 0, result.output
    (run_dir,) = runs.glob("demo/*/*")
    assert run_dir.parent.name == "mf"
    assert load_config(run_dir / "config.yaml").model == "mf"
    assert json.loads((run_dir / "results.json").read_text())["model"] == "mf"


def test_models_command_and_config_file_accept_mmrec_names(tmp_path):
    assert invoke("models", "LightGCN").output.startswith("lightgcn:")
    assert invoke("models", "BPR").output.startswith("mf:")
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"model": "LightGCN", "lightgcn": {"n_layers": 2}}))
    cfg = build_config(file=cfg_file)
    assert (cfg.model, cfg.params.n_layers) == ("lightgcn", 2)


def test_experiment_files_accept_mmrec_names(tmp_path):
    from rearm_dgl.experiments import load_experiment

    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump({"models": ["BPR", "LightGCN"], "datasets": ["demo"],
                                        "seeds": [1], "set": {"mf.reg_weight": 0.01}}))
    exp = load_experiment(exp_file, runs_dir=tmp_path / "runs")
    assert exp.models == ["mf", "lightgcn"]
    mf_cell = next(c for c in exp.cells() if c.model == "mf")
    assert exp.config(mf_cell).params.reg_weight == 0.01  # the mf section applies to BPR
    assert exp.run_dir(mf_cell).parts[-3] == "mf"
    exp_file.write_text(yaml.safe_dump({"models": ["BPRR"], "datasets": ["demo"],
                                        "seeds": [1]}))
    result = invoke("experiment", "run", exp_file)
    assert result.exit_code == 2 and f"{exp_file}: models: unknown model 'BPRR'" in result.output


def test_tune_model_accepts_mmrec_names(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("mf.reg_weight: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}\n")
    studies = tmp_path / "studies"
    result = invoke("tune", "-m", "BPR", "--trials", 1, "--set", "train.epochs=1",
                    "--set", "train.device=cpu", "--studies-dir", studies, "--space", space)
    assert result.exit_code == 0, result.output
    assert (studies / "mf-demo" / "trials.csv").is_file()


# --- unknown keys suggest the closest one ------------------------------------------------


@pytest.mark.parametrize("override,hint", [
    ("train.lrr=1", "did you mean train.lr?"),
    ("lrr=1", "did you mean train.lr?"),
    ("trian.lr=1", "did you mean train.lr?"),
    ("mf.embeding_size=8", "did you mean mf.embedding_size?"),
    ("learning_rate=1e-3", "did you mean train.lr? (MMRec and RecBole call it learning_rate)"),
    ("train.stopping_step=5", "did you mean train.patience?"),
    ("valid_metric=NDCG@20", "did you mean eval.metric?"),
])
def test_unknown_set_key_suggests_the_closest(tmp_path, override, hint):
    result = invoke("train", "-m", "mf", "--set", override, "--runs-dir", tmp_path / "r")
    assert result.exit_code == 2 and hint in result.output, result.output
    assert not (tmp_path / "r").exists()


def test_nothing_close_gives_no_suggestion():
    with pytest.raises(ConfigError) as info:
        build_config("mf", overrides=["xyzzy=1"])
    assert "did you mean" not in str(info.value)


def test_experiment_set_key_suggests_the_closest(tmp_path):
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(yaml.safe_dump({"models": ["mf"], "datasets": ["demo"], "seeds": [1],
                                        "set": {"train.epoch": 3}}))
    result = invoke("experiment", "run", exp_file)
    assert result.exit_code == 2
    assert str(exp_file) in result.output and "did you mean train.epochs?" in result.output


def test_foreign_keys_point_at_real_fields():
    cfg = build_config("mf")
    flat = cfg.flat()
    for theirs, ours in FOREIGN_KEYS.items():
        assert ours in flat, (theirs, ours)


# --- python -m and the README ----------------------------------------------------------


def test_python_dash_m_shows_the_help():
    out = subprocess.run([sys.executable, "-m", "rearm_dgl", "--help"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage: rearm-dgl") and "train" in out.stdout


def _readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(title)
    end = text.find("\n#", start + len(title))
    return text[start:end if end > 0 else None]


def test_readme_table_has_every_foreign_key():
    section = _readme_section("### Coming from MMRec or RecBole")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| `")]
    mapped = {}
    for theirs, ours in rows:
        for name in re.findall(r"`([a-z_]+)`", theirs):
            mapped[name] = ours
    for theirs, ours in FOREIGN_KEYS.items():
        assert theirs in mapped and f"`{ours}`" in mapped[theirs], theirs


def test_readme_python_snippet_runs(tmp_path, monkeypatch):
    section = _readme_section("### Coming from MMRec or RecBole")
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(code.strip().splitlines()) <= 6  # the API in five lines, plus a blank one
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102 - the README's own example
    result = scope["result"]
    assert result.epochs_run == 1 and 0.0 <= result.test["Recall@20"] <= 1.0
    assert result.run_dir.is_relative_to(Path("runs") / "demo" / "mf")
