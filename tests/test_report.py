"""Reports from synthetic run directories written here in the exact run-folder layout.

These tests need no training: each run folder gets ``config.yaml``, ``env.json``,
``metrics.jsonl``, ``results.json`` (with the training loop's ``"efficiency"`` object),
``per_user_test.npz`` and the experiment runner's ``cell.json``, with values chosen so that
some columns are significant and some are not.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from scipy.stats import ttest_rel, wilcoxon

from rearm_dgl.cli import main
from rearm_dgl.errors import DataError
from rearm_dgl.reporting import build_report, collect_runs
from rearm_dgl.reporting.render import to_latex, to_markdown
from rearm_dgl.reporting.stats import ranks
from rearm_dgl.reporting.tables import efficiency_table, main_table

METRICS = ("Recall@10", "Recall@20", "NDCG@10", "NDCG@20")
SEEDS = (1, 2, 3)
N_USERS = 60


def per_user_values(mean: float, dataset: str, model: str, seed: int, metric: str
                    ) -> np.ndarray:
    """Per-user values averaging exactly to ``mean``: a user effect shared by all models of
    a dataset (so the pairing matters) plus noise of the model and seed."""
    user_effect = np.random.default_rng(abs(hash(dataset)) % 2**32).normal(0, 0.05, N_USERS)
    key = f"{dataset}/{model}/{seed}/{metric}".encode()
    noise = np.random.default_rng(list(key)).normal(0, 0.02, N_USERS)
    values = user_effect + noise
    return values - values.mean() + mean


def make_run(root: Path, experiment: str, dataset: str, model: str, seed: int,
             test: dict[str, float], variant: str = "default", kind: str = "comparison",
             sweep: dict | None = None, config_fp: str | None = None, data_fp: str = "d" * 32,
             note: str = "stand-in features for the test", efficiency: dict | None = None
             ) -> Path:
    run = root / experiment / dataset / model / variant / f"s{seed}"
    run.mkdir(parents=True)
    config = {"model": model, "data": {"dataset": dataset}, "train": {"seed": seed, "epochs": 3},
              model: {"embedding_size": 8, "variant": variant}}
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run / "env.json").write_text(json.dumps({"python": "3.11", "torch": "x", "device": "cpu",
                                              "device_name": "test-cpu"}))
    lines = [{"epoch": e, "loss": {"total": 1.0 / e + seed * 0.01, "bpr": 1.0 / e},
              "valid": {m: v * e / 3 for m, v in test.items()}, "seconds": 0.1, "lr": 1e-3}
             for e in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    results = {"model": model, "dataset": dataset, "seed": seed, "best_epoch": 2 + seed % 2,
               "epochs_run": 3, "stop_reason": "max_epochs", "valid": dict(test),
               "test": dict(test), "wall_seconds": 1.5, "data_fingerprint": data_fp,
               "config_fingerprint": config_fp or f"{model}-{variant}".ljust(32, "0"),
               "features_note": note, "status": "completed"}
    if efficiency is not None:
        results["efficiency"] = efficiency
    (run / "results.json").write_text(json.dumps(results))
    np.savez(run / "per_user_test.npz", users=np.arange(N_USERS)[::-1].copy(),
             **{m: per_user_values(v, dataset, model, seed, m)[::-1].copy()
                for m, v in test.items()})
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
    # On "beta" REARM is only slightly ahead: no dagger expected.
    ("beta", "mf"): (0.20, (0.010, -0.010, 0.000)),
    ("beta", "lightgcn"): (0.30, (0.030, -0.020, 0.000)),
    ("beta", "rearm"): (0.301, (-0.020, 0.030, -0.005)),
}


def metric_values(dataset: str, model: str, seed: int) -> dict[str, float]:
    base, offsets = VALUES[(dataset, model)]
    off = offsets[SEEDS.index(seed)]
    return {m: round(base * (1 + 0.1 * i) + off, 6) for i, m in enumerate(METRICS)}


def efficiency_of(model: str, seed: int) -> dict:
    return {"epoch_seconds": 0.5 + 0.1 * seed, "eval_seconds": 0.2 * seed,
            "peak_rss_bytes": 2**30 * seed, "peak_gpu_bytes": None,
            "n_parameters": 1000 + len(model)}


@pytest.fixture
def synthetic_runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    for (dataset, model) in VALUES:
        for seed in SEEDS:
            make_run(root, "cmp", dataset, model, seed, metric_values(dataset, model, seed),
                     efficiency=None if model == "mf" else efficiency_of(model, seed))
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


def _raw(root: Path, dataset: str, model: str, metric: str) -> list[float]:
    return [json.loads((root / "cmp" / dataset / model / "default" / f"s{s}" / "results.json")
                       .read_text())["test"][metric] for s in SEEDS]


def _user_means(root: Path, dataset: str, model: str, metric: str) -> np.ndarray:
    """Per-user values averaged over seeds, ordered by user id (computed independently)."""
    out = []
    for s in SEEDS:
        with np.load(root / "cmp" / dataset / model / "default" / f"s{s}" /
                     "per_user_test.npz") as npz:
            order = np.argsort(npz["users"])
            out.append(npz[metric][order])
    return np.mean(out, axis=0)


def test_main_table_values_marks_and_user_tests(synthetic_runs, tmp_path):
    out = tmp_path / "report"
    build_report(out, runs_dir=synthetic_runs)
    md = (out / "results.md").read_text()
    tex = (out / "results.tex").read_text()
    labels = {"mf": "BPR-MF", "lightgcn": "LightGCN", "rearm": "REARM"}
    daggers = 0
    for d_i, dataset in enumerate(("alpha", "beta")):
        for m_i, metric in enumerate(METRICS):
            col = d_i * len(METRICS) + m_i
            raw = {model: _raw(synthetic_runs, dataset, model, metric) for model in labels}
            means = {m: float(np.mean(v)) for m, v in raw.items()}
            shown = sorted({round(v, 4) for v in means.values()}, reverse=True)
            for model, label in labels.items():
                cell = _row(md, label)[col]
                mean_text = f"{means[model]:.4f}"
                assert cell.endswith(f" ± {np.std(raw[model], ddof=1):.4f}"), cell
                # Only the mean carries the mark.
                assert cell.startswith(f"**{mean_text}**") == (round(means[model], 4)
                                                               == shown[0])
                assert cell.startswith(f"<u>{mean_text}</u>") == (round(means[model], 4)
                                                                  == shown[1])
            best_base = max(("mf", "lightgcn"), key=lambda m: means[m])
            x = _user_means(synthetic_runs, dataset, "rearm", metric)
            y = _user_means(synthetic_runs, dataset, best_base, metric)
            p_w, p_t = wilcoxon(x, y).pvalue, ttest_rel(x, y).pvalue
            expect = bool(p_w < 0.05 and x.mean() > y.mean())
            assert ("†" in _row(md, "REARM")[col]) == expect
            daggers += expect
            note = next(line for line in md.splitlines()
                        if line.startswith(f"- {dataset.title()} {metric[0]}@{metric[-2:]}:"))
            assert f"Wilcoxon p = {p_w:.3g}," in note and f"p = {p_t:.3g}," in note
            assert f"n = {N_USERS} users, 3 seeds" in note
            imp = (means["rearm"] - means[best_base]) / means[best_base] * 100
            assert _row(md, "Improv.")[col] == f"{imp:+.2f}%"
    assert 0 < daggers < 8  # the fixture has significant and non-significant columns
    assert "Wilcoxon signed-rank test over n = 60 test users" in md
    assert "fewer than 3 seeds" in md
    assert r"\begin{table*}" in tex  # two datasets: spans both columns
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule(lr){2-5}"):
        assert rule in tex
    # Bold mean only, std small under it, dagger on the mean.
    assert re.search(r"\\textbf\{0\.\d{4}\}(\$\^\\dagger\$)?\\\\\[-2pt\]"
                     r"\{\\scriptsize\$\\pm\$0\.\d{4}\}", tex)
    assert r"\underline{" in tex and r"$^\dagger$" in tex


def test_ties_on_displayed_values_share_the_mark():
    assert ranks([0.12341, 0.12344, 0.1, 0.09]) == [1, 1, 2, None]
    assert ranks([0.3, float("nan"), 0.29996, 0.2]) == [1, None, 1, 2]
    assert ranks([0.2, 0.1]) == [1, 2]


def test_tied_means_are_both_bold_in_the_table(tmp_path):
    root = tmp_path / "runs"
    for model, value in (("mf", 0.20001), ("lightgcn", 0.20003), ("rearm", 0.1)):
        for seed in SEEDS:
            make_run(root, "cmp", "alpha", model, seed, {m: value for m in METRICS})
    table = main_table(collect_runs(root), "cmp")
    assert table.cell("BPR-MF", "Alpha", "R@20").bold
    assert table.cell("LightGCN", "Alpha", "R@20").bold
    assert table.cell("REARM", "Alpha", "R@20").underline


def test_fewer_than_three_seeds_never_give_a_dagger(tmp_path):
    root = tmp_path / "runs"
    for seed in (1, 2):
        make_run(root, "cmp", "alpha", "mf", seed, {m: 0.1 for m in METRICS})
        make_run(root, "cmp", "alpha", "rearm", seed, {m: 0.3 for m in METRICS})
    table = main_table(collect_runs(root), "cmp")
    _, test = table.meta["tests"][("alpha", "Recall@20")]
    assert test.wilcoxon_p < 1e-6  # clearly different per user, yet no mark from 2 seeds
    cell = table.cell("REARM", "Alpha", "R@20")
    assert cell.bold and not cell.dagger
    assert "only 2 paired seeds" in "\n".join(table.notes)


def test_single_seed_shows_mean_only(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "cmp", "alpha", "mf", 1, {m: 0.1 for m in METRICS})
    make_run(root, "cmp", "alpha", "rearm", 1, {m: 0.3 for m in METRICS})
    table = main_table(collect_runs(root), "cmp")
    assert _row(to_markdown(table), "REARM")[1] == "**0.3000**"
    assert r"\begin{table}[t]" in to_latex(table)  # one dataset: one column wide


def test_means_only_and_minus_signs(synthetic_runs, tmp_path):
    out = tmp_path / "report"
    build_report(out, runs_dir=synthetic_runs, std="none")
    md = (out / "results.md").read_text()
    assert "±" not in _row(md, "REARM")[0]
    tex = (out / "ablation.tex").read_text()
    assert "$-$9.80\\%" in tex and "-9.80" not in tex  # a real minus sign
    with pytest.raises(DataError, match="--std"):
        build_report(out, runs_dir=synthetic_runs, std="tiny")


def test_csv_files_match_results_json(synthetic_runs, tmp_path):
    out = tmp_path / "report"
    build_report(out, runs_dir=synthetic_runs)
    runs = list(csv.DictReader((out / "runs.csv").open()))
    raw = {str(p.parent): json.loads(p.read_text()) for p in synthetic_runs.rglob("results.json")}
    assert len(runs) == len(raw)
    for row in runs:
        res = raw[row["run_dir"]]
        assert int(row["seed"]) == res["seed"] and row["model"] == res["model"]
        for m in METRICS:
            assert float(row[f"test_{m}"]) == pytest.approx(res["test"][m], abs=1e-12)
        assert int(row["epochs_run"]) == res["epochs_run"]
        assert int(row["best_epoch"]) == res["best_epoch"]
        assert float(row["wall_seconds"]) == res["wall_seconds"]
        eff = res.get("efficiency")
        if eff is None:
            assert row["peak_rss_bytes"] == "" and row["epoch_seconds"] == ""
        else:
            assert int(row["peak_rss_bytes"]) == eff["peak_rss_bytes"]
            assert float(row["epoch_seconds"]) == pytest.approx(eff["epoch_seconds"])
            assert int(row["n_parameters"]) == eff["n_parameters"]
    results = list(csv.DictReader((out / "results.csv").open()))
    cell = next(r for r in results if r["experiment"] == "cmp" and r["dataset"] == "beta"
                and r["model"] == "rearm")
    vals = _raw(synthetic_runs, "beta", "rearm", "NDCG@20")
    assert float(cell["test_NDCG@20_mean"]) == pytest.approx(np.mean(vals))
    assert float(cell["test_NDCG@20_std"]) == pytest.approx(np.std(vals, ddof=1))
    assert cell["n_seeds"] == "3" and cell["seeds"] == "1 2 3"
    assert len(results) == 6 + 3 + 3


def test_efficiency_table_reads_results_json_and_tolerates_absence(synthetic_runs):
    table = efficiency_table(collect_runs(synthetic_runs))
    rows = {(label, cells[0].text): cells for label, cells in table.rows}
    lightgcn = rows[("LightGCN", "Alpha")]
    assert lightgcn[1].text == f"{np.median([0.6, 0.7, 0.8]):.2f}"  # s/epoch
    assert lightgcn[2].text == f"{np.median([0.2, 0.4, 0.6]):.2f}"  # s/eval
    assert lightgcn[3].text == f"{np.mean([3, 2, 3]):.1f}"  # epochs to the best epoch
    assert lightgcn[4].text == "3.00" and lightgcn[5].text == "-"  # GiB; no GPU
    assert lightgcn[6].text == f"{1000 + len('lightgcn'):,}"
    mf = rows[("BPR-MF", "Beta")]  # written without the efficiency object
    assert [c.text for c in mf[1:3]] == ["-", "-"] and mf[3].text != "-"
    assert "6 run(s) have no efficiency record" in table.notes[0]


def test_report_files_pdfs_index_and_determinism(synthetic_runs, tmp_path):
    out = tmp_path / "report"
    result = build_report(out, runs_dir=synthetic_runs)
    for name in ("index.md", "results.md", "results.tex", "ablation.md", "ablation.tex",
                 "ablation.png", "ablation.pdf", "sensitivity.md", "sensitivity.png",
                 "sensitivity.pdf", "curves.png", "curves.pdf", "reproduction.md",
                 "reproduction.tex", "efficiency.md", "efficiency.tex", "runs.csv",
                 "results.csv"):
        assert (out / name).is_file(), name
        assert name in result.files
    for png in out.glob("*.png"):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        pdf = png.with_suffix(".pdf").read_bytes()
        assert pdf[:5] == b"%PDF-" and b"%%EOF" in pdf[-32:] and len(pdf) > 3000
    index = (out / "index.md").read_text()
    for run in synthetic_runs.rglob("results.json"):  # every run is listed
        assert str(run.parent) in index
    assert "rearm-dgl report --runs" in index
    ablation = (out / "ablation.md").read_text()
    assert _row(ablation, "no_cl")[0].startswith("0.") and _row(ablation, "full")[0].startswith(
        "**")
    assert _row(ablation, "no_cl")[2] == "-9.80%"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    build_report(out, runs_dir=synthetic_runs)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]


def test_report_folder_mode_follows_umask(synthetic_runs, tmp_path):
    old = os.umask(0o022)
    try:
        build_report(tmp_path / "report", runs_dir=synthetic_runs)
    finally:
        os.umask(old)
    assert (tmp_path / "report").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "report" / "configs").stat().st_mode & 0o777 == 0o755


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


def test_damaged_runs_are_named_and_skipped_through_the_cli(synthetic_runs, tmp_path):
    truncated = synthetic_runs / "cmp" / "alpha" / "mf" / "default" / "s1"
    data = (truncated / "per_user_test.npz").read_bytes()
    (truncated / "per_user_test.npz").write_bytes(data[: len(data) // 2])
    mistyped = synthetic_runs / "cmp" / "beta" / "lightgcn" / "default" / "s2"
    results = json.loads((mistyped / "results.json").read_text())
    results["seed"] = "two"
    (mistyped / "results.json").write_text(json.dumps(results))
    wrong_metric = synthetic_runs / "cmp" / "beta" / "mf" / "default" / "s3"
    results = json.loads((wrong_metric / "results.json").read_text())
    results["test"]["Recall@20"] = "0.2"
    (wrong_metric / "results.json").write_text(json.dumps(results))

    out = tmp_path / "report"
    res = CliRunner().invoke(main, ["report", "--runs", str(synthetic_runs), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    for run, what in ((truncated, "per_user_test.npz: cannot be read"),
                      (mistyped, "field 'seed' is 'two', not an integer"),
                      (wrong_metric, "field 'test'")):
        line = next(x for x in res.output.splitlines() if str(run) + ":" in x)
        assert line.startswith("warning: skipped run") and what in line, line
        assert str(run) in (out / "index.md").read_text()
    runs = list(csv.DictReader((out / "runs.csv").open()))
    assert len(runs) == len(list(synthetic_runs.rglob("results.json"))) - 3


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


# ---------------------------------------------------------------------------------------
# LaTeX: every generated file compiles, and the tables fit an ACM two-column page.

PDFLATEX = shutil.which("pdflatex")
# ACM sigconf geometry: 7 in of text, two 3.33 in columns.
PREAMBLE = r"""\documentclass[twocolumn,10pt]{article}
\usepackage[paperwidth=8.5in,paperheight=11in,textwidth=7in,textheight=9.25in,
  columnsep=0.33in]{geometry}
\usepackage{booktabs}
\begin{document}
"""


def compile_tex(tex: Path) -> str:
    """Compile ``tex`` inside a two-column document; return the log (fails on errors)."""
    doc = tex.with_name(f"doc-{tex.stem}.tex")
    doc.write_text(PREAMBLE + f"\\input{{{tex.name}}}\n\\end{{document}}\n")
    res = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", doc.name],
                         cwd=tex.parent, capture_output=True, text=True, timeout=120)
    log = doc.with_suffix(".log").read_text(errors="replace")
    assert res.returncode == 0, f"{tex.name} does not compile:\n{res.stdout[-3000:]}"
    return log


@pytest.fixture
def three_dataset_runs(tmp_path) -> Path:
    root = tmp_path / "runs3"
    for dataset in ("baby", "sports", "clothing"):
        for model, base in (("mf", 0.05), ("lightgcn", 0.06), ("freedom", 0.07),
                            ("rearm", 0.075)):
            for seed in SEEDS:
                make_run(root, "cmp", dataset, model, seed,
                         {m: round(base * (1 + 0.2 * i) + 0.001 * seed, 6)
                          for i, m in enumerate(METRICS)},
                         efficiency=efficiency_of(model, seed))
    return root


@pytest.mark.skipif(PDFLATEX is None, reason="no LaTeX installed (apt: texlive-latex-base "
                    "texlive-latex-recommended)")
@pytest.mark.parametrize("std", ["small", "none", "inline"])
def test_every_tex_file_compiles_and_fits(synthetic_runs, three_dataset_runs, tmp_path, std):
    for name, runs in (("two", synthetic_runs), ("three", three_dataset_runs)):
        out = tmp_path / f"report-{name}"
        build_report(out, runs_dir=runs, std=std)
        tex_files = sorted(out.glob("*.tex"))
        assert {t.name for t in tex_files} >= {"results.tex", "reproduction.tex",
                                                "efficiency.tex"}
        for tex in tex_files:
            log = compile_tex(tex)
            wide = "table*" in tex.read_text()
            if std != "inline" or tex.name not in ("results.tex", "reproduction.tex"):
                # Three datasets x four metrics fit the 7 in text width (means only, or
                # std under the mean); mean ± std inline is the documented exception.
                assert "Overfull \\hbox" not in log, (tex.name, std, wide)
            assert "Float too large" not in log, tex.name  # every table fits on one page
        results = (out / "results.tex").read_text()
        assert (r"\begin{table*}" in results) == (name == "three" or name == "two")
