"""``rearm-dgl train``, ``rearm-dgl evaluate`` and ``rearm-dgl models``."""

from __future__ import annotations

import logging
import math
import re
import sys
import typing
from dataclasses import MISSING, fields
from importlib import resources
from pathlib import Path

import click
import yaml

from rearm_dgl.config import DEVICES, build_config, load_config, with_overrides
from rearm_dgl.errors import ConfigError, DataError

#: Options that define the run and so cannot be combined with --resume.
_RUN_OPTIONS = ("dataset", "model", "seed", "epochs", "config_file", "overrides", "data_root",
                "runs_dir")


class _TqdmHandler(logging.Handler):
    """Log records printed through ``tqdm.write`` so they do not break the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _setup_logging(quiet: bool) -> None:
    log = logging.getLogger("rearm_dgl")
    for handler in [h for h in log.handlers if isinstance(h, _TqdmHandler)]:
        log.removeHandler(handler)
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


@click.command(short_help="Train a model and score the test split (default: REARM on demo).")
@click.option("--dataset", "-d", default=None, metavar="NAME|PATH",
              help="demo (default), a name under data.data_root such as baby, sports or "
                   "clothing (their paper presets apply), or a dataset folder.")
@click.option("--model", "-m", default="rearm", show_default=True,
              help="Registered model (`rearm-dgl models` lists them).")
@click.option("--seed", type=int, default=None, help="Sets train.seed.")
@click.option("--epochs", type=int, default=None, help="Sets train.epochs (the maximum).")
@click.option("--device", type=click.Choice(DEVICES), default=None,
              help="Sets train.device; auto picks CUDA when available.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML file laid out like a run's config.yaml; applied after the preset.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one field, e.g. --set train.lr=1e-3 (repeatable; applied last).")
@click.option("--data-root", default=None, type=click.Path(file_okay=False),
              help="Sets data.data_root, the folder that holds named datasets.")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Where run folders are created.")
@click.option("--resume", type=click.Path(file_okay=False), default=None, metavar="RUN_DIR",
              help="Continue an interrupted run from its last checkpoint (from epoch 0 if "
                   "it had none yet).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no per-epoch log lines.")
@click.pass_context
def train(ctx: click.Context, dataset, model, seed, epochs, device, config_file, overrides,
          data_root, runs_dir, resume, quiet) -> None:
    """Train a model, early-stopping on validation, and score the test split once.

    With no arguments it trains REARM on the built-in demo dataset. Every run gets a folder
    runs/<dataset>/<model>/<timestamp>-s<seed>/ with config, metrics, results, checkpoints
    and TensorBoard event files.
    """
    from rearm_dgl.train import fit

    _setup_logging(quiet)
    if resume is not None:
        given = [p for p in _RUN_OPTIONS
                 if ctx.get_parameter_source(p) is not click.core.ParameterSource.DEFAULT]
        if given:
            names = ", ".join("--" + p.replace("_file", "").replace("overrides", "set")
                              .replace("_", "-") for p in given)
            raise click.UsageError(f"--resume continues a run with its saved config; "
                                   f"{names} cannot be combined with it (only --device, --quiet)")
        cfg = load_config(Path(resume) / "config.yaml") if (Path(resume) / "config.yaml").exists() \
            else None
        if cfg is not None and device is not None:
            cfg = with_overrides(cfg, {"train.device": device})
        result = fit(cfg, resume=resume, quiet=quiet)
    else:
        sets = list(overrides)
        for key, value in (("train.seed", seed), ("train.epochs", epochs),
                           ("train.device", device)):
            if value is not None:
                sets.append(f"{key}={value}")
        cfg = build_config(model=model, dataset=dataset, file=config_file, overrides=sets)
        if data_root is not None:  # set directly: a path need not survive YAML parsing
            cfg = with_overrides(cfg, {"data.data_root": data_root})
        result = fit(cfg, runs_dir=runs_dir, quiet=quiet)

    click.echo(format_metrics_table({"valid": result.valid, "test": result.test}))
    click.echo(f"stopped: {result.stop_reason} after {result.epochs_run} epochs "
               f"(best epoch {result.best_epoch}); {result.wall_seconds:.1f} s")
    if result.features_note:
        click.echo(f"features: {result.features_note}")
    click.echo(f"run: {result.run_dir}")


@click.command(short_help="Re-score a run's best checkpoint.")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--split", type=click.Choice(["valid", "test"]), default="test", show_default=True,
              help="Which split to score.")
@click.option("--device", type=click.Choice(DEVICES), default=None,
              help="Where to score (default: the run's train.device).")
def evaluate(run_dir, split, device) -> None:
    """Re-score a run's best checkpoint and check it against results.json."""
    from rearm_dgl.io_utils import read_json
    from rearm_dgl.tracking import RESULTS_FILE
    from rearm_dgl.train import rescore

    result = rescore(run_dir, split=split, device=device)
    click.echo(format_metrics_table({split: result.metrics}))
    results_path = Path(run_dir) / RESULTS_FILE
    if not results_path.exists():
        click.echo(f"({RESULTS_FILE} not written yet: the run did not finish)")
        return
    saved = read_json(results_path)
    if saved is None:
        raise DataError(results_path, "not a readable JSON object",
                        "the file is damaged; rerun the training or restore it")
    saved = saved.get(split, {})
    bad = [f"{k}: saved {v:.6g}, now {result.metrics.get(k, float('nan')):.6g}"
           for k, v in saved.items()
           if not math.isclose(result.metrics.get(k, float("nan")), v, rel_tol=1e-5,
                               abs_tol=1e-7)]
    if bad:
        raise ConfigError(f"{run_dir}: re-scored {split} metrics differ from {RESULTS_FILE}: "
                          + "; ".join(bad))
    click.echo(f"matches {RESULTS_FILE} ({len(saved)} {split} metrics)")


@click.command(short_help="List the models with their hyperparameters and defaults.")
@click.argument("name", required=False)
def models(name) -> None:
    """List the registered models with their hyperparameters and defaults."""
    from rearm_dgl.models import registry

    names = [name] if name else registry.names()
    blocks = []
    for model_name in names:
        cls = registry.get(model_name)
        blocks.append(_describe_model(cls))
    click.echo("\n\n".join(blocks))


def _describe_model(cls) -> str:
    config_cls = cls.config_cls
    doc = _first_line(cls.__doc__) or _first_line(config_cls.__doc__)
    presets = _preset_names(cls.name)
    lines = [f"{cls.name}: {doc}",
             f"  features: {'required' if cls.needs_features else 'not used'}; "
             f"loss parts: {', '.join(cls.loss_parts)}; "
             f"presets: {', '.join(presets) if presets else 'none'}"]
    hints = typing.get_type_hints(config_cls)
    described = _attribute_docs(config_cls.__doc__ or "")
    rows = []
    for f in fields(config_cls):
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else "")
        rows.append((f"{cls.name}.{f.name}", _type_name(hints[f.name]), repr(default),
                     described.get(f.name, "")))
    if rows:
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            lines.append("  " + "  ".join(r[i].ljust(widths[i]) for i in range(3))
                         + (f"  {r[3]}" if r[3] else ""))
    return "\n".join(lines)


def _first_line(doc: str | None) -> str:
    return doc.strip().splitlines()[0].strip() if doc and doc.strip() else ""


def _attribute_docs(doc: str) -> dict[str, str]:
    """``field -> first sentence`` from a Google-style ``Attributes:`` section."""
    out: dict[str, str] = {}
    in_section, current = False, None
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped == "Attributes:":
            in_section = True
            continue
        if not in_section:
            continue
        m = re.match(r"^(\w+): (.*)$", stripped)
        if m and line.startswith(" " * 8) and not line.startswith(" " * 12):
            current = m.group(1)
            out[current] = m.group(2)
        elif stripped and current:
            out[current] += " " + stripped
        elif not stripped and out:
            break
    return {k: v.split(". ")[0].rstrip(".") for k, v in out.items()}


def _type_name(hint) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        return f"list[{_type_name(args[0])}]" if args else "list"
    return getattr(hint, "__name__", str(hint))


def _preset_names(model: str) -> list[str]:
    try:
        text = resources.files("rearm_dgl.presets").joinpath(f"{model}.yaml").read_text()
    except FileNotFoundError:
        return []
    return [k for k in (yaml.safe_load(text) or {}) if k != "default"]


def format_metrics_table(columns: dict[str, dict[str, float]]) -> str:
    """A plain-text table: one row per metric, one column per split.

    Args:
        columns: ``{"valid": {"Recall@20": 0.1, ...}, "test": {...}}``.
    """
    names: list[str] = []
    for metrics in columns.values():
        names += [n for n in metrics if n not in names]
    names.sort(key=_metric_order)
    width = max([len("metric")] + [len(n) for n in names])
    lines = ["metric".ljust(width) + "".join(f"{c:>10}" for c in columns)]
    for n in names:
        cells = "".join(f"{columns[c][n]:>10.4f}" if n in columns[c] else f"{'-':>10}"
                        for c in columns)
        lines.append(n.ljust(width) + cells)
    return "\n".join(lines)


def _metric_order(name: str) -> tuple[int, int]:
    base, _, k = name.partition("@")
    order = {"Recall": 0, "NDCG": 1, "Precision": 2, "MAP": 3}
    return order.get(base, 9), int(k) if k.isdigit() else 0


__all__ = ["evaluate", "format_metrics_table", "models", "train"]
