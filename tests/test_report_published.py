"""Published numbers as data: the shipped ``published.csv`` and the reproduction table."""

from __future__ import annotations

import csv

import pytest
from test_report import METRICS, SEEDS, make_run

from rearm_dgl.errors import DataError
from rearm_dgl.reporting import collect_runs
from rearm_dgl.reporting.published import load_published, published_path, reproduction_tables
from rearm_dgl.reporting.render import to_latex, to_markdown
from rearm_dgl.reporting.tables import model_label, short

REGISTRY_NAMES = {"mf", "lightgcn", "vbpr", "freedom", "rearm", "lattice", "dragon", "mgcn",
                  "bm3", "slmrec", "lgmrec"}

# Spot checks typed from the specs (baselines.md sections 3.9-8.9, rearm.md section 6).
SPOT = [
    ("lattice", "baby", "NDCG@10", 0.0292, "MMRec evaluation/README.md, main table"),
    ("lattice", "sports", "Recall@10", 0.0641, "split-ablation"),
    ("mgcn", "sports", "Recall@20", 0.1106, "MGCN paper"),
    ("mgcn", "clothing", "NDCG@20", 0.0428, "MGCN paper"),
    ("bm3", "clothing", "Recall@10", 0.0421, "MGCN paper"),
    ("bm3", "baby", "NDCG@20", 0.0383, "MMRec evaluation/README.md, main table"),
    ("slmrec", "sports", "Recall@20", 0.1017, "its own runs"),
    ("slmrec", "baby", "Recall@20", 0.0775, "MMRec evaluation/README.md, main table"),
    ("lgmrec", "clothing", "NDCG@20", 0.0372, "LGMRec repository logs"),
    ("lgmrec", "sports", "Recall@10", 0.0719, "LGMRec repository logs"),
    ("rearm", "sports", "Recall@20", 0.1231, "arXiv 2508.13745"),
    ("rearm", "clothing", "Recall@20", 0.0998, "arXiv 2508.13745"),
]


def test_shipped_file_holds_the_specs_numbers_with_sources():
    rows = load_published()
    assert len(rows) == 81
    assert {r.model for r in rows} <= REGISTRY_NAMES
    # No source gives these; the file must not invent them.
    assert not {r.model for r in rows} & {"mf", "lightgcn", "vbpr", "freedom", "dragon"}
    for model, dataset, metric, value, source in SPOT:
        hits = [r for r in rows if (r.model, r.dataset, r.metric, r.split)
                == (model, dataset, metric, "test") and source in r.source]
        assert [r.value for r in hits] == [value], (model, dataset, metric)
    valid = [r for r in rows if r.split == "valid"]
    assert sorted((r.dataset, r.value) for r in valid) == [
        ("baby", 0.0957), ("clothing", 0.0829), ("sports", 0.1034)]
    # Every (model, dataset, source) gives the four metrics, or REARM's Recall@20 only.
    blocks: dict[tuple, set] = {}
    for r in rows:
        if r.split == "test":
            blocks.setdefault((r.model, r.dataset, r.source), set()).add(r.metric)
    for (model, _, _), metrics in blocks.items():
        assert metrics == ({"Recall@20"} if model == "rearm" else set(METRICS))


def test_reproduction_tables_cover_every_published_number(tmp_path):
    root = tmp_path / "runs"
    for model in ("mf", "rearm"):
        for seed in SEEDS:
            make_run(root, "cmp", "sports", model, seed, {m: 0.11 + 0.001 * seed for m in METRICS})
    tables = {t.meta["dataset"]: t for t in reproduction_tables(collect_runs(root))}
    assert list(tables) == ["baby", "sports", "clothing"]
    sources = tables["baby"].meta["sources"]
    cols = {m: 1 + i for i, m in enumerate(tables["baby"].meta["metrics"])}
    for p in load_published():
        table = tables[p.dataset]
        if p.split != "test":
            assert f"also gives validation {short(p.metric)} = {p.value:.4f}" in \
                to_markdown(table)
            continue
        ref = f"[{sources.index(p.source) + 1}]"
        assert f"{ref} {p.source}" in " ".join(table.caption)
        row = [cells for label, cells in table.rows
               if label == model_label(p.model) and cells[0].text == ref]
        assert len(row) == 1 and row[0][cols[p.metric]].value == p.value, p
    sports = tables["sports"]
    ours = [cells for label, cells in sports.rows
            if label == "REARM" and cells[0].text.startswith("ours (")]
    assert ours[0][cols["Recall@20"]].stat.mean == pytest.approx(0.112)
    delta = [cells for label, cells in sports.rows
             if label == "REARM" and cells[0].text.startswith("ours vs")][0]
    assert delta[cols["Recall@20"]].text == f"{(0.112 - 0.1231) / 0.1231 * 100:+.1f}%"
    assert delta[cols["Recall@10"]].text == "-"  # the paper gives Recall@20 only
    assert "stand-in features for the test" in to_markdown(sports)
    assert not [c for label, c in tables["baby"].rows if c[0].text.startswith("ours")]
    tex = to_latex(sports)
    assert r"p{6cm}" in tex and r"\begin{table*}" in tex


def test_a_damaged_published_file_is_refused_with_its_line(tmp_path):
    bad = tmp_path / "published.csv"
    rows = list(csv.reader(published_path().open()))
    rows[3][4] = "twelve"
    with bad.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(DataError, match="line 4 is not a valid published number"):
        load_published(bad)
    bad.write_text("model,dataset,value\n")
    with pytest.raises(DataError, match="columns are"):
        load_published(bad)
