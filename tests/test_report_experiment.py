"""A report over real runs of a tiny comparison experiment (3 seeds), checked end to end:
``runs.csv``/``results.csv`` against the raw ``results.json`` files, the per-user p-values
against ``scipy.stats`` on the saved ``per_user_test.npz``, the PDF figures and LaTeX that
compiles."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import yaml
from conftest import write_tiny_dataset
from scipy.stats import ttest_rel, wilcoxon
from test_report import PDFLATEX, compile_tex

from rearm_dgl.experiments import load_experiment, run_experiment
from rearm_dgl.reporting import build_report

FAST = {"train.epochs": 2, "train.patience": 2, "train.batch_size": 64, "train.lr": 1e-2,
        "train.device": "cpu", "mf.embedding_size": 8, "lightgcn.embedding_size": 8,
        "rearm.embedding_size": 8, "rearm.n_layers": 1, "graph.user_knn_k": 5,
        "graph.item_knn_k": 3}
SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("tinyrep")
    data = write_tiny_dataset(root / "data" / "tiny", stand_in=True)
    f = root / "main.yaml"
    f.write_text(yaml.safe_dump({"name": "main", "models": ["mf", "lightgcn", "rearm"],
                                 "datasets": [str(data)], "seeds": list(SEEDS), "set": FAST,
                                 "runs_dir": str(root / "runs")}, sort_keys=False))
    assert not run_experiment(f).failed
    out = root / "report"
    build_report(out, experiments=[f])
    exp = load_experiment(f)
    return out, {(c.model, c.seed): exp.run_dir(c) for c in exp.cells()}


def test_csv_files_are_the_raw_results(tiny_report):
    out, run_dirs = tiny_report
    rows = {(r["model"], int(r["seed"])): r for r in csv.DictReader((out / "runs.csv").open())}
    assert set(rows) == set(run_dirs)
    for key, run in run_dirs.items():
        res = json.loads((run / "results.json").read_text())
        row = rows[key]
        assert row["run_dir"] == str(run)
        for metric, value in res["test"].items():
            assert float(row[f"test_{metric}"]) == pytest.approx(value, rel=1e-9)
        for metric, value in res["valid"].items():
            assert float(row[f"valid_{metric}"]) == pytest.approx(value, rel=1e-9)
        assert int(row["epochs_run"]) == res["epochs_run"]
        assert int(row["best_epoch"]) == res["best_epoch"]
        assert float(row["wall_seconds"]) == pytest.approx(res["wall_seconds"])
    cells = {r["model"]: r for r in csv.DictReader((out / "results.csv").open())}
    for model in ("mf", "lightgcn", "rearm"):
        vals = [json.loads((run_dirs[(model, s)] / "results.json").read_text())["test"]
                ["Recall@20"] for s in SEEDS]
        assert float(cells[model]["test_Recall@20_mean"]) == pytest.approx(np.mean(vals))
        assert float(cells[model]["test_Recall@20_std"]) == pytest.approx(np.std(vals, ddof=1))


def test_per_user_p_values_match_scipy(tiny_report):
    out, run_dirs = tiny_report
    md = (out / "results.md").read_text()

    def users_mean(model, metric):
        per_seed = []
        for s in SEEDS:
            with np.load(run_dirs[(model, s)] / "per_user_test.npz") as npz:
                per_seed.append(npz[metric][np.argsort(npz["users"])])
        return np.mean(per_seed, axis=0)

    for metric in ("Recall@10", "Recall@20", "NDCG@10", "NDCG@20"):
        means = {m: float(np.mean([json.loads((run_dirs[(m, s)] / "results.json").read_text())
                                   ["test"][metric] for s in SEEDS])) for m in ("mf", "lightgcn")}
        base = max(means, key=means.get)
        x, y = users_mean("rearm", metric), users_mean(base, metric)
        short = f"{metric[0]}@{metric.split('@')[1]}"
        note = next(line for line in md.splitlines() if line.startswith(f"- Tiny {short}:"))
        label = {"mf": "BPR-MF", "lightgcn": "LightGCN"}[base]
        assert f"best baseline {label}:" in note
        if np.any(x - y):
            assert f"Wilcoxon p = {wilcoxon(x, y).pvalue:.3g}," in note
            assert f"paired t-test over users p = {ttest_rel(x, y).pvalue:.3g}," in note
        assert f"n = {len(x)} users, 3 seeds" in note


def test_figures_as_pdf_and_latex_compiles(tiny_report, tmp_path):
    out, _ = tiny_report
    pdf = (out / "curves.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and len(pdf) > 3000
    if PDFLATEX is None:
        pytest.skip("no LaTeX installed (apt: texlive-latex-base texlive-latex-recommended)")
    copy = tmp_path / "tex"
    shutil.copytree(out, copy)
    for tex in sorted(copy.glob("*.tex")):
        log = compile_tex(tex)
        assert "Overfull \\hbox" not in log and "Float too large" not in log, tex.name
