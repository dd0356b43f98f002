"""Config: merge order, checked keys and values, round trips, the paper presets."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import yaml

from rearm_dgl.config import (
    SEED_MAX,
    GraphConfig,
    RunConfig,
    TrainConfig,
    build_config,
    check_against_data,
    config_from_dict,
    field_names,
    load_config,
    preset,
    with_overrides,
)
from rearm_dgl.errors import ConfigError
from rearm_dgl.models import registry

needs_rearm = pytest.mark.skipif("rearm" not in registry.names(),
                                 reason="REARM is not registered yet")


def write_yaml(path, obj):
    path.write_text(yaml.safe_dump(obj))
    return path


def test_merge_order_defaults_preset_file_set(tmp_path):
    # "mydata" has no preset entry of its own, so the preset layer is mf's `default` entry.
    plain = build_config("mf", "mydata", use_preset=False)
    assert plain.train.lr == 5e-5 and plain.train.negatives == "all_known"  # dataclass default
    with_preset = build_config("mf", "mydata")
    assert with_preset.train.lr == 1e-3 and with_preset.train.negatives == "train_only"
    f = write_yaml(tmp_path / "c.yaml", {"train": {"lr": 2e-3, "patience": 3},
                                         "mf": {"embedding_size": 16}})
    with_file = build_config("mf", "mydata", file=f)
    assert (with_file.train.lr, with_file.train.patience) == (2e-3, 3)
    assert with_file.train.negatives == "train_only"  # the preset survives where not set
    with_set = build_config("mf", "mydata", file=f, overrides=["train.lr=3e-3", "reg_weight=0.5"])
    assert (with_set.train.lr, with_set.train.patience) == (3e-3, 3)
    assert (with_set.params.embedding_size, with_set.params.reg_weight) == (16, 0.5)


def test_dataset_and_model_come_from_arguments_file_or_set(tmp_path):
    f = write_yaml(tmp_path / "c.yaml", {"model": "mf", "data": {"dataset": "somewhere"}})
    cfg = build_config("rearm", None, file=f)
    assert (cfg.model, cfg.data.dataset) == ("mf", "somewhere")
    assert build_config("mf", "given", file=f).data.dataset == "given"
    assert build_config("mf", None, overrides=["data.dataset=other"]).data.dataset == "other"
    assert build_config("mf").data.dataset == "demo"


@pytest.mark.parametrize("overrides,key", [
    (["train.nope=1"], "train.nope"),
    (["nosection.lr=1"], "nosection"),
    (["nope=1"], "nope"),
    (["train.epochs=abc"], "train.epochs"),
    (["train.epochs=1.5"], "train.epochs"),
    (["train.lr=fast"], "train.lr"),
    (["train.negatives=some"], "train.negatives"),
    (["train.device=tpu"], "train.device"),
    (["train.epochs=0"], "train.epochs"),
    (["eval.metric=Recall@50"], "eval.metric"),
    (["eval.topk=[0]"], "eval.topk"),
    (["mf.embedding_size=0"], "mf.embedding_size"),
    (["mf.reg_weight=true"], "mf.reg_weight"),
    (["batch_size=3"], "batch_size"),  # train.batch_size and eval.batch_size
    (["seed=3"], "seed"),  # graph.seed and train.seed
    (["no_equals_sign"], "no_equals_sign"),
])
def test_bad_keys_and_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        build_config("mf", "demo", overrides=overrides)
    assert key in str(err.value)


def test_ambiguous_bare_key_says_so():
    with pytest.raises(ConfigError, match="ambiguous"):
        build_config("mf", "demo", overrides=["batch_size=3"])


def test_bad_file_content_names_the_file_and_key(tmp_path):
    f = write_yaml(tmp_path / "a.yaml", {"train": {"lrr": 1}})
    with pytest.raises(ConfigError, match="train.lrr"):
        build_config("mf", "demo", file=f)
    f = write_yaml(tmp_path / "b.yaml", {"trian": {"lr": 1}})
    with pytest.raises(ConfigError, match="trian"):
        build_config("mf", "demo", file=f)
    f = tmp_path / "c.yaml"
    f.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="c.yaml"):
        build_config("mf", "demo", file=f)
    with pytest.raises(ConfigError, match="not found"):
        build_config("mf", "demo", file=tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown model"):
        build_config("nosuchmodel", "demo")


def test_round_trip_through_dict_and_yaml(tmp_path):
    cfg = build_config("mf", "demo", overrides=["train.lr=0.003", "eval.topk=[5, 10, 20]",
                                                 "mf.embedding_size=32", "train.seed=9"])
    assert config_from_dict(cfg.to_dict()) == cfg
    cfg.save(tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg and isinstance(again, RunConfig)
    assert again.eval.topk == (5, 10, 20)
    assert cfg.flat()["mf.embedding_size"] == 32 and "train.lr" in field_names(cfg)


def test_with_overrides_is_a_checked_copy():
    cfg = build_config("mf", "mydata")  # no dataset entry: mf's default preset, lr 1e-3
    new = with_overrides(cfg, {"train.lr": 0.01, "mf.embedding_size": 8})
    assert (new.train.lr, new.params.embedding_size) == (0.01, 8)
    assert cfg.train.lr == 1e-3  # frozen original untouched
    with pytest.raises(ConfigError, match="train.lrr"):
        with_overrides(cfg, {"train.lrr": 1})
    with pytest.raises(ConfigError, match="mf.embedding_size"):
        with_overrides(cfg, {"mf.embedding_size": "wide"})


SPEC_SECTION_6 = {
    "baby": dict(n_layers=4, reg_weight=5e-4, rank=3, s_drop=0.4, m_drop=0.6,
                 u_mm_image_weight=0.2, i_mm_image_weight=0.0, uu_co_weight=0.4,
                 ii_co_weight=0.2, user_knn_k=40, item_knn_k=10, n_uu_layers=1, n_ii_layers=1,
                 cl_tmp=0.6, cl_loss_weight=5e-6, diff_loss_weight=5e-5),
    "sports": dict(n_layers=5, reg_weight=5e-2, rank=7, s_drop=1.0, m_drop=0.2,
                   u_mm_image_weight=0.0, i_mm_image_weight=0.2, uu_co_weight=0.9,
                   ii_co_weight=0.2, user_knn_k=25, item_knn_k=5, n_uu_layers=2,
                   n_ii_layers=2, cl_tmp=1.5, cl_loss_weight=1e-3, diff_loss_weight=5e-4),
    "clothing": dict(n_layers=4, reg_weight=1e-5, rank=3, s_drop=0.4, m_drop=0.1,
                     u_mm_image_weight=0.1, i_mm_image_weight=0.1, uu_co_weight=0.7,
                     ii_co_weight=0.1, user_knn_k=45, item_knn_k=10, n_uu_layers=1,
                     n_ii_layers=1, cl_tmp=0.03, cl_loss_weight=1e-6, diff_loss_weight=1e-5),
}


@needs_rearm
@pytest.mark.parametrize("dataset", sorted(SPEC_SECTION_6))
def test_paper_presets_match_spec_section_6(dataset):
    cfg = build_config("rearm", dataset)
    for key, value in SPEC_SECTION_6[dataset].items():
        section = cfg.graph if key in ("user_knn_k", "item_knn_k") else cfg.params
        assert getattr(section, key) == pytest.approx(value), (dataset, key)
    # Common to all three.
    assert cfg.params.embedding_size == 64
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.patience, cfg.train.epochs,
            cfg.train.seed) == (5e-5, 2048, 20, 2000, 2025)
    assert cfg.eval.batch_size == 8192 and cfg.eval.metric == "Recall@20"
    # A dataset path picks the preset by its folder name.
    by_path = build_config("rearm", f"/data/amazon/{dataset}")
    assert (by_path.params, by_path.graph) == (cfg.params, cfg.graph)

def test_preset_file_entries_are_valid_for_every_model():
    for model in registry.names():
        for dataset in ("demo", "baby", "sports", "clothing"):
            table = preset(model, dataset)
            assert isinstance(table, dict)
            build_config(model, dataset)  # raises ConfigError on a bad preset entry


@pytest.mark.parametrize("cls,key", [(TrainConfig, "train.seed"), (GraphConfig, "graph.seed")])
def test_seeds_take_the_numpy_range(cls, key):
    assert cls(seed=0).seed == 0 and cls(seed=SEED_MAX).seed == SEED_MAX
    for bad in (-1, SEED_MAX + 1, True):
        with pytest.raises(ConfigError, match=key) as info:
            cls(seed=bad)
        assert info.value.key == key


@pytest.mark.parametrize("override,key", [("mf.reg_weight=.nan", "mf.reg_weight"),
                                          ("train.lr=nan", "train.lr"),
                                          ("train.lr=.inf", "train.lr")])
def test_nan_and_infinite_rates_are_refused(override, key):
    with pytest.raises(ConfigError, match=key):
        build_config("mf", overrides=[override])


def test_a_value_check_names_the_file_that_set_it(tmp_path):
    f = write_yaml(tmp_path / "c.yaml", {"train": {"lr": 0, "seed": 3}})
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'c.yaml'}: train.lr: must be"):
        build_config("mf", file=f)
    # a --set value that replaces the file's is reported as the --set's own
    with pytest.raises(ConfigError, match=r"^train.seed: must be"):
        build_config("mf", file=f, overrides=["train.lr=0.1", "train.seed=-1"])


def test_check_against_data(caplog):
    data = SimpleNamespace(n_users=5, n_items=8, name="small")
    ok = build_config("lightgcn", overrides=["eval.topk=[5,8]", "eval.metric=Recall@8",
                                             "graph.user_knn_k=5", "graph.item_knn_k=8"])
    with caplog.at_level(logging.WARNING, logger="rearm_dgl"):
        check_against_data(ok, data)
    assert caplog.text == ""
    with pytest.raises(ConfigError, match=r"eval.topk: cut-off\(s\) \[10, 20\] exceed the 8 "):
        check_against_data(build_config("lightgcn"), data)
    big_k = with_overrides(ok, {"graph.user_knn_k": 6, "graph.item_knn_k": 9})
    with caplog.at_level(logging.WARNING, logger="rearm_dgl"):
        check_against_data(big_k, data)
    assert "graph.user_knn_k=6 exceeds the 5 users" in caplog.text
    assert "graph.item_knn_k=9 exceeds the 8 items" in caplog.text
    caplog.clear()
    mf = build_config("mf", overrides=["eval.topk=[5]", "eval.metric=Recall@5",
                                       "graph.user_knn_k=50"])
    with caplog.at_level(logging.WARNING, logger="rearm_dgl"):
        check_against_data(mf, data)  # mf builds no graph: its kNN sizes do not matter
    assert caplog.text == ""
