"""TensorBoard hparams sessions: one logdir with runs of several models reads as one table."""

from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata, plugin_data_pb2

from rearm_dgl.config import build_config
from rearm_dgl.hparams import BOOKKEEPING, SESSION_DIR, metric_tag, write_session
from rearm_dgl.tracking import TensorBoardTracker


def read_session(run_dir):
    acc = EventAccumulator(str(run_dir / SESSION_DIR), size_guidance={"scalars": 0})
    acc.Reload()
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    assert metadata.EXPERIMENT_TAG not in content  # no experiment summary: TB takes the union
    data = plugin_data_pb2.HParamsPluginData.FromString(content[metadata.SESSION_START_INFO_TAG])
    hparams = {}
    for name, value in data.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        hparams[name] = getattr(value, kind)
        hparams[name + ":kind"] = kind
    scalars = {t: acc.Scalars(t)[0].value for t in acc.Tags()["scalars"]}
    return hparams, scalars


def test_runs_of_two_models_keep_their_own_columns_and_types(tmp_path):
    for model in ("rearm", "lightgcn"):
        cfg = build_config(model=model, dataset="demo")
        tracker = TensorBoardTracker(tmp_path / model)
        tracker.log_hparams(cfg, {"Recall@20": 0.3, "NDCG@20": 0.2}, {"Recall@20": 0.25},
                            "Recall@20")
        tracker.close()
    rearm, rearm_metrics = read_session(tmp_path / "rearm")
    lightgcn, lightgcn_metrics = read_session(tmp_path / "lightgcn")
    # Each session carries its own model's columns (TensorBoard shows the union).
    assert any(k.startswith("rearm.") for k in rearm)
    assert not any(k.startswith("rearm.") for k in lightgcn)
    assert rearm["model"] == "rearm" and lightgcn["model"] == "lightgcn"
    # Booleans stay booleans, numbers numbers.
    assert rearm["rearm.use_cl"] is True and rearm["rearm.use_cl:kind"] == "bool_value"
    assert rearm["train.lr:kind"] == "number_value"
    assert rearm["eval.topk"] == "10,20"
    # Bookkeeping keys are left out; None values too (an empty cell).
    assert not set(rearm) & BOOKKEEPING
    assert "eval.stop_decimals" not in rearm or rearm["eval.stop_decimals:kind"] == \
        "number_value"
    # One metric naming scheme: the session's metrics only.
    assert rearm_metrics == {metric_tag("valid", "Recall@20"): 0.30000001192092896,
                             metric_tag("valid", "NDCG@20"): 0.20000000298023224,
                             metric_tag("test", "Recall@20"): 0.25}
    assert set(lightgcn_metrics) == set(rearm_metrics)


def test_write_session_drops_none_and_non_finite_values(tmp_path):
    write_session(tmp_path, {"a": None, "b": float("nan"), "c": [1, 2], "d": False},
                  {metric_tag("valid", "Recall@20"): 0.5})
    hparams, metrics = read_session(tmp_path)
    assert {k for k in hparams if ":" not in k} == {"c", "d"}
    assert hparams["c"] == "1,2" and hparams["d"] is False
    assert metrics == {"hparam/valid.Recall@20": 0.5}


def tensorboard_experiment(logdir):
    """The hparams table TensorBoard's own plugin computes for ``logdir``."""
    from tensorboard import context, default, program
    from tensorboard.backend.event_processing import data_ingester
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context

    tb = program.TensorBoard(default.get_plugins())
    tb.configure(argv=[None, "--logdir", str(logdir), "--load_fast", "false",
                       "--reload_task", "blocking", "--reload_interval", "0"])
    ingester = data_ingester.LocalDataIngester(tb.flags)
    ingester.start()
    ctx = backend_context.Context(base_plugin.TBContext(
        logdir=str(logdir), data_provider=ingester.data_provider, flags=tb.flags))
    request = context.RequestContext()
    return ctx.experiment_from_metadata(
        request, "", include_metrics=True,
        hparams_run_to_tag_to_content=ctx.hparams_metadata(request, ""),
        data_provider_hparams=None)


def test_tensorboard_shows_the_union_of_columns(tmp_path):
    from tensorboard.plugins.hparams import api_pb2

    # LightGCN's run sorts first: with a per-run experiment summary its columns won.
    for model in ("lightgcn", "rearm"):
        tracker = TensorBoardTracker(tmp_path / model)
        tracker.log_epoch(1, {"total": 1.0}, {"Recall@20": 0.2}, 1.0, 1e-3)
        tracker.log_hparams(build_config(model=model, dataset="demo"), {"Recall@20": 0.3},
                            {"Recall@20": 0.25}, "Recall@20")
        tracker.close()
    exp = tensorboard_experiment(tmp_path)
    types = {h.name: h.type for h in exp.hparam_infos}
    assert types["rearm.use_cl"] == api_pb2.DATA_TYPE_BOOL
    assert types["train.lr"] == api_pb2.DATA_TYPE_FLOAT64
    assert types["model"] == api_pb2.DATA_TYPE_STRING
    assert "lightgcn.n_layers" in types
    assert sorted(m.name.tag for m in exp.metric_infos) == [
        "hparam/test.Recall@20", "hparam/valid.Recall@20"]
