"""Reports from synthetic run directories written here in the exact run-folder layout.

These tests need no training: each run folder gets ``config.yaml``, ``env.json``,
``metrics.jsonl``, ``results.json``, ``per_user_test.npz`` and the experiment runner's
``cell.json`` with values chosen so that some columns are significant and some are not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import ttest_rel

from rearm_dgl.errors import DataError
from rearm_dgl.reporting import build_report, collect_runs
from rearm_dgl.reporting.tables import main_table

METRICS = ("Recall@10", "Recall@20", "NDCG@10", "NDCG@20")
SEEDS = (1, 2, 3)


def make_run(root: Path, experiment: str, dataset: str, model: str, seed: int,
             test: dict[str, float], variant: str = "default", kind: str = "comparison",
             sweep: dict | None = None, config_fp: str | None = None, data_fp: str = "d" * 32,
             note: str = "stand-in features for the test") -> Path:
    run = root / experiment / dataset / model / variant / f"s{seed}"
    run.mkdir(parents=True)
    config = {"model": model, "data": {"dataset": dataset}, "train": {"seed": seed, "epochs": 3},
              model: {"embedding_size": 8, "variant": variant}}
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run / "env.json").write_text(json.dumps({"python": "3.11", "torch": "x", "device": "cpu"}))
    lines = [{"epoch": e, "loss": {"total": 1.0 / e + seed * 0.01, "bpr": 1.0 / e},
              "valid": {m: v * e / 3 for m, v in test.items()}, "seconds": 0.1, "lr": 1e-3}
             for e in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    results = {"model": model, "dataset": dataset, "seed": seed, "best_epoch": 3,
               "epochs_run": 3, "stop_reason": "max_epochs", "valid": dict(test),
               "test": dict(test), "wall_seconds": 1.5, "data_fingerprint": data_fp,
               "config_fingerprint": config_fp or f"{model}-{variant}".ljust(32, "0"),
               "features_note": note, "status": "completed"}
    (run / "results.json").write_text(json.dumps(results))
    users = np.arange(5)
    np.savez(run / "per_user_test.npz", users=users,
             **{m: np.full(5, v) for m, v in test.items()})
    (run / "cell.json").write_text(json.dumps({
        "experiment": experiment, "kind": kind, "model": model, "dataset": dataset,
        "variant": variant, "label": variant, "seed": seed, "sweep": sweep or {}}))
    return run


# Per (dataset, model): base value per metric index and per-seed offsets.
VALUES = {
    # REARM clearly and consistently better on "alpha": daggers expected.
    ("alpha", "mf"): (0.10, (0.000, 0.002, -0.001)),
    ("alpha", "lightgcn"): (0.12, (0.001, -0.001, 0.000)),
    ("alpha", "rearm"): (0.15, (0.001, 0.000, 0.002)),
    # On "beta" REARM is only slightly and noisily ahead: no dagger expected.
    ("beta", "mf"): (0.20, (0.010, -0.010, 0.000)),
    ("beta", "lightgcn"): (0.30, (0.030, -0.020, 0.000)),
    ("beta", "rearm"): (0.301, (-0.020, 0.030, -0.005)),
}


def metric_values(dataset: str, model: str, seed: int) -> dict[str, float]:
    base, offsets = VALUES[(dataset, model)]
    off = offsets[SEEDS.index(seed)]
    return {m: round(base * (1 + 0.1 * i) + off, 6) for i, m in enumerate(METRICS)}


@pytest.fixture
def synthetic_runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    for (dataset, model) in VALUES:
        for seed in SEEDS:
            make_run(root, "cmp", dataset, model, seed, metric_values(dataset, model, seed))
    for variant, scale in (("full", 1.0), ("no_cl", 0.9), ("no_orth", 0.95)):
        for seed in SEEDS:
            make_run(root, "abl", "alpha", "rearm", seed,
                     {m: 0.1 * scale + 0.001 * seed for m in METRICS}, variant=variant,
                     kind="ablation", config_fp=f"abl-{variant}".ljust(32, "0"))
    for k in (5, 10, 20):
        for seed in SEEDS:
            make_run(root, "sens", "alpha", "rearm", seed,
                     {m: 0.05 + 0.001 * k + 0.002 * seed for m in METRICS},
                     variant=f"user_knn_k={k}", kind="sweep", sweep={"graph.user_knn_k": k},
                     config_fp=f"sens-{k}".ljust(32, "0"))
    return root


def _row(md: str, label: str) -> list[str]:
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no row {label!r} in\n{md}")


def _mean(xs):
    return float(np.mean(xs))


def test_main_table_values_marks_and_ttest(synthetic_runs, tmp_path):
    out = tmp_path / "report"
    build_report(out, runs_dir=synthetic_runs)
    md = (out / "results.md").read_text()
    tex = (out / "results.tex").read_text()
    labels = {"mf": "BPR-MF", "lightgcn": "LightGCN", "rearm": "REARM"}
    daggers = 0
    for d_i, dataset in enumerate(("alpha", "beta")):
        for m_i, metric in enumerate(METRICS):
            col = d_i * len(METRICS) + m_i
            raw = {model: [json.loads((synthetic_runs / "cmp" / dataset / model / "default"
                                       / f"s{s}" / "results.json").read_text())["test"][metric]
                           for s in SEEDS] for model in labels}
            means = {m: _mean(v) for m, v in raw.items()}
            order = sorted(means, key=lambda m: -means[m])
            for model, label in labels.items():
                cell = _row(md, label)[col]
                text = f"{means[model]:.4f} ± {np.std(raw[model], ddof=1):.4f}"
                assert text in cell, (cell, text)
                assert cell.startswith("**") == (model == order[0])
                assert cell.startswith("<u>") == (model == order[1])
            best_base = max(("mf", "lightgcn"), key=lambda m: means[m])
            p = ttest_rel(raw["rearm"], raw[best_base]).pvalue
            expect = bool(p < 0.05 and means["rearm"] > means[best_base])
            assert _row(md, "REARM")[col].endswith("†") == expect
            daggers += expect
            imp = (means["rearm"] - means[best_base]) / means[best_base] * 100
            assert _row(md, "Improv. over best baseline")[col] == f"{imp:+.2f}%"
    assert 0 < daggers < 8  # the fixture has significant and non-significant columns
    assert "scipy.stats.ttest_rel" in md and "n = 3" in md
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule(lr){2-5}"):
        assert rule in tex
    assert r"\textbf{" in tex and r"\underline{" in tex and r"$^\dagger$" in tex


def test_report_files_index_and_determinism(synthetic_runs, tmp_path):
    out = tmp_path / "report"
    result = build_report(out, runs_dir=synthetic_runs)
    for name in ("index.md", "results.md", "results.tex", "ablation.md", "ablation.tex",
                 "ablation.png", "sensitivity.md", "sensitivity.png", "curves.png",
                 "reproduction.md", "reproduction.tex"):
        assert (out / name).is_file(), name
        assert name in result.files
    for png in out.glob("*.png"):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    index = (out / "index.md").read_text()
    for run in synthetic_runs.rglob("results.json"):  # every run is listed
        assert str(run.parent) in index
    assert "rearm-dgl report --runs" in index
    assert "stand-in features for the test" in (out / "reproduction.md").read_text() or \
        "not run" in (out / "reproduction.md").read_text()
    ablation = (out / "ablation.md").read_text()
    assert _row(ablation, "no_cl")[0].startswith("0.") and _row(ablation, "full")[0].startswith(
        "**")
    assert _row(ablation, "no_cl")[2] == "-10.00%" or _row(ablation, "no_cl")[2].startswith("-")
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    build_report(out, runs_dir=synthetic_runs)
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]


def test_mixed_fingerprints_are_refused_and_nothing_written(synthetic_runs, tmp_path):
    out = tmp_path / "report"
    build_report(out, runs_dir=synthetic_runs)
    old_index = (out / "index.md").read_text()
    bad = synthetic_runs / "cmp" / "alpha" / "mf" / "default" / "s2"
    results = json.loads((bad / "results.json").read_text())
    results["config_fingerprint"] = "f" * 32
    (bad / "results.json").write_text(json.dumps(results))
    with pytest.raises(DataError, match=re.escape(str(bad))):
        build_report(out, runs_dir=synthetic_runs)
    assert (out / "index.md").read_text() == old_index  # the old report is untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]

    results["config_fingerprint"] = "mf-default".ljust(32, "0")
    results["data_fingerprint"] = "e" * 32
    (bad / "results.json").write_text(json.dumps(results))
    with pytest.raises(DataError, match="data fingerprint"):
        collect_runs(synthetic_runs)


def test_empty_runs_dir_is_a_clear_error(tmp_path):
    (tmp_path / "runs").mkdir()
    out = tmp_path / "report"
    with pytest.raises(DataError, match="no finished runs"):
        build_report(out, runs_dir=tmp_path / "runs")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "runs"]
    with pytest.raises(DataError, match="not found"):
        build_report(out, runs_dir=tmp_path / "nowhere")


def test_per_user_file_must_agree_with_results(synthetic_runs):
    run = synthetic_runs / "cmp" / "beta" / "rearm" / "default" / "s1"
    np.savez(run / "per_user_test.npz", users=np.arange(5), **{"Recall@20": np.zeros(5)})
    with pytest.raises(DataError, match="per-user Recall@20"):
        collect_runs(synthetic_runs)


def test_single_seed_and_missing_pairs_give_no_dagger(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "cmp", "alpha", "mf", 1, {m: 0.1 for m in METRICS})
    make_run(root, "cmp", "alpha", "rearm", 1, {m: 0.3 for m in METRICS})
    frame = collect_runs(root)
    table = main_table(frame, "cmp")
    cell = table.cell("REARM", "Alpha", "R@20")
    assert cell.bold and not cell.dagger and cell.text == "0.3000"
    assert table.cell("BPR-MF", "Alpha", "R@20").underline


def test_failure_while_writing_leaves_previous_report(synthetic_runs, tmp_path, monkeypatch):
    out = tmp_path / "report"
    build_report(out, runs_dir=synthetic_runs)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    from rearm_dgl.reporting import figures

    def broken(*args, **kwargs):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(figures, "curves_figure", broken)
    with pytest.raises(RuntimeError, match="figure failed"):
        build_report(out, runs_dir=synthetic_runs)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder
    with pytest.raises(RuntimeError):
        build_report(tmp_path / "fresh", runs_dir=synthetic_runs)
    assert not (tmp_path / "fresh").exists()
