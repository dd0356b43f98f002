"""Training: one model on one dataset, from a config to ``results.json``.

:func:`fit` reads top to bottom: resolve the device, seed, load the data and graph, build the
model and optimiser, then run epochs of seeded BPR batches. After every epoch it evaluates on
validation, keeps the best weights in memory, logs one progress line and calls the
callbacks; it stops early on ``eval.metric`` (default Recall@20, rounded to
``eval.stop_decimals``) and finally scores the test split once, with the best validation
weights (spec section 5). Checkpoints follow :mod:`rearm_dgl.checkpoints`: the resumable
state every ``train.checkpoint_minutes``, and what ``train.keep_checkpoints`` keeps at the end.

    result = fit(build_config("mf", "demo"))
    result.test["Recall@20"], result.run_dir

Every epoch's randomness (batches, negatives, dropout) depends only on ``(seed, epoch)``, so
the same seed gives the same metrics on CPU, and a run resumed from ``checkpoint_last.pt``
continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rearm_dgl import tracking
from rearm_dgl.checkpoints import (
    KEPT,
    RESUME_MAY_CHANGE,
    BestWeights,
    best_state,
    data_paths_of,
    load_checkpoint,
    load_resume,
    prune,
    recorded_data_config,
    restore,
    rng_state,
    save_checkpoint,
)
from rearm_dgl.config import RunConfig, check_against_data, config_from_dict
from rearm_dgl.data.dataset import Interactions
from rearm_dgl.errors import ConfigError, DataError
from rearm_dgl.evaluation import evaluate, model_scorer
from rearm_dgl.io_utils import read_json
from rearm_dgl.models import registry
from rearm_dgl.models.base import Recommender, require_features
from rearm_dgl.optim import step_in_backward
from rearm_dgl.sampling import BPRSampler

logger = logging.getLogger(__name__)

STOP_EARLY = "early_stopping"
STOP_MAX_EPOCHS = "max_epochs"
STOP_NAN = "nan_loss"

#: ``callback(epoch, valid_metrics)``, called after each validation; raising stops the run.
Callback = Callable[[int, dict[str, float]], None]


@dataclass
class FitResult:
    """What :func:`fit` returns; the same numbers are in the run's ``results.json``.

    Attributes:
        run_dir: The run directory.
        best_epoch: Epoch of the best validation metric (0: no epoch completed).
        epochs_run: Epochs that completed training and validation.
        stop_reason: ``early_stopping``, ``max_epochs`` or ``nan_loss``.
        valid: Validation metrics at the best epoch.
        test: Test metrics of the best checkpoint.
        wall_seconds: Time spent in :func:`fit`, summed over resumed sessions.
        features_note: The dataset's stand-in features note ("" for real features).
        results: The full ``results.json`` content.
    """

    run_dir: Path
    best_epoch: int
    epochs_run: int
    stop_reason: str
    valid: dict[str, float]
    test: dict[str, float]
    wall_seconds: float
    features_note: str = ""
    results: dict[str, Any] = field(default_factory=dict)


class EarlyStopping:
    """Patience on a metric where higher is better; only a strict improvement counts.

    The run stops once the count of epochs in a row without improvement exceeds
    ``patience``, i.e. at the ``(patience + 1)``-th such epoch.

    Args:
        patience: Epochs in a row without improvement that are tolerated.
        decimals: Round each value to this many decimals before comparing, as MMRec and the
            REARM authors' code do (4): a gain that does not show there is a tie, and so an
            epoch without improvement. None compares the raw values.
    """

    def __init__(self, patience: int, decimals: int | None = None):
        self.patience = patience
        self.decimals = decimals
        self.best = -math.inf
        self.best_epoch = 0
        self.bad_epochs = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record ``value`` for ``epoch``; True if it is a new best."""
        value = float(value)
        if self.decimals is not None and math.isfinite(value):
            value = round(value, self.decimals)
        if value > self.best:  # NaN never improves
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs > self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])


def progress_line(epoch: int, metric: str, value: float, stopper: EarlyStopping) -> str:
    """One line on where early stopping stands after ``epoch``."""
    return (f"epoch {epoch} valid {metric} {value:.4f} (best {stopper.best:.4f} "
            f"@{stopper.best_epoch}, {stopper.bad_epochs}/{stopper.patience} without gain)")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA if available, else CPU; ``cuda`` must be available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda was requested but torch sees no CUDA device; "
                          "use --device cpu (or auto)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


#: The clock of the checkpoint interval (tests replace it).
_clock = time.monotonic


def _seed_epoch(seed: int, epoch: int) -> None:
    # Each epoch's dropout and any model-side randomness depend on (seed, epoch) only, so a
    # resumed run replays the uninterrupted one exactly.
    seed_everything(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))


def training_parts(cfg: RunConfig, data, graph, device: torch.device, *,
                   step_large_in_backward: bool = True
                   ) -> tuple[Recommender, torch.optim.Optimizer, BPRSampler, Interactions]:
    """The model, its optimiser, the batch sampler and the dataset to train with, as :func:`fit`
    sets them up.

    The initialisation is seeded with ``train.seed``, so one seed gives one set of weights;
    parameters of a million elements or more are stepped inside the backward
    (:func:`rearm_dgl.optim.step_in_backward`) unless ``step_large_in_backward`` is false,
    which the benchmarks use for comparison. The dataset returned is ``data`` without its
    feature arrays (:meth:`~rearm_dgl.data.dataset.Interactions.without_features`): the model
    holds what it needs of them, and a caller that keeps only this one frees the rest (Baby:
    0.12 GiB of a 2.6 GiB training peak). The benchmarks call this too, so what they time is
    what ``fit`` runs.
    """
    torch.manual_seed(cfg.train.seed)
    model = registry.get(cfg.model).build(cfg.params, data, graph, device)
    optimizer = model.configure_optimizer(cfg.train.lr)
    if step_large_in_backward:
        step_in_backward(optimizer)
    sampler = BPRSampler(data, cfg.train.negatives, cfg.train.batch_size, cfg.train.seed)
    return model, optimizer, sampler, data.without_features()


def fit(
    cfg: RunConfig | None = None,
    run_dir: str | Path | None = None,
    runs_dir: str | Path = "runs",
    data=None,
    graph=None,
    callbacks: Iterable[Callback] = (),
    resume: str | Path | None = None,
    quiet: bool = False,
    progress: Callable[[str], None] | None = None,
) -> FitResult:
    """Train ``cfg.model`` on ``cfg.data``, early-stopping on validation, then score test.

    One process at a time trains a run folder (:func:`rearm_dgl.tracking.hold_run_dir`). The
    resumable ``checkpoint_last.pt`` is written every ``train.checkpoint_minutes``; the best
    weights stay in CPU memory until then; at the end ``train.keep_checkpoints`` decides which
    checkpoints remain (:mod:`rearm_dgl.checkpoints`).

    Args:
        cfg: The resolved run config. With ``resume`` it may be omitted (the saved one is
            used); if given it must match the saved one except for the keys of
            :data:`rearm_dgl.checkpoints.RESUME_MAY_CHANGE`.
        run_dir: Use this folder for the run instead of a new one under ``runs_dir``.
        runs_dir: Parent of new run folders (``<runs_dir>/<dataset>/<model>/<stamp>-s<seed>``).
        data: The loaded :class:`~rearm_dgl.data.dataset.Interactions`; loaded from
            ``cfg.data`` when None.
        graph: The relation heterograph; built (or read from cache) when None and the model
            uses one.
        callbacks: ``callback(epoch, valid_metrics)`` after each validation. An exception
            stops the run and propagates once the writers are closed. The run stays
            resumable from its last checkpoint, except under ``keep_checkpoints: none``,
            where a run stopped this way (a pruned trial) keeps no checkpoint either.
        resume: A run folder to continue from its ``checkpoint_last.pt``.
        quiet: No progress bar and no per-epoch log lines.
        progress: Called after each validated epoch with one line such as
            ``epoch 40 valid Recall@20 0.0810 (best 0.0832 @35, 5/20 without gain)``; the
            tuner and the experiment runner tag it with the trial or cell and print it.

    Returns:
        A :class:`FitResult`; ``results.json`` in the run folder holds the same.

    Raises:
        ConfigError: Bad config, a model that needs features the data lacks, a resume
            config mismatch, or a run folder that another process holds.
        DataError: The dataset cannot be loaded, or changed since the resumed run began.
    """
    t_start = time.perf_counter()
    with contextlib.ExitStack() as held:
        checkpoint = None
        if resume is not None:
            run_dir = Path(resume)
            if not run_dir.is_dir():
                raise ConfigError(f"--resume {run_dir}: no such run folder")
            held.enter_context(tracking.hold_run_dir(run_dir))
            cfg, checkpoint = load_resume(run_dir, cfg)
        elif cfg is None:
            raise ConfigError("fit: pass a config, or resume=RUN_DIR to continue a run")
        return _fit(cfg, checkpoint, resume is not None, run_dir, runs_dir, data, graph,
                    callbacks, quiet, progress, held, t_start)


def _fit(cfg: RunConfig, checkpoint: dict[str, Any] | None, resuming: bool, run_dir, runs_dir,
         data, graph, callbacks: Iterable[Callback], quiet: bool,
         progress: Callable[[str], None] | None, held: contextlib.ExitStack,
         t_start: float) -> FitResult:
    """The body of :func:`fit`; ``checkpoint`` is the resumed state, None for a new run or
    for a resumed one that stopped before its first checkpoint (it restarts at epoch 1)."""
    log = logger.debug if quiet else logger.info
    train_cfg, metric, policy = cfg.train, cfg.eval.metric, cfg.train.keep_checkpoints

    # Device and seeds.
    device = resolve_device(train_cfg.device)
    seed_everything(train_cfg.seed)
    tracking.reset_peak_memory(device)

    # Data and graph. A resumed run reads its data where it first found it (relative
    # paths were resolved against the folder it started from).
    recorded = None
    if checkpoint is not None:
        recorded = checkpoint.get("data_paths")
    elif resuming:  # no checkpoint yet: env.json has them from the start
        recorded = (read_json(Path(run_dir) / tracking.ENV_FILE) or {}).get("data_paths")
    data_cfg = recorded_data_config(cfg, recorded)
    if data is None:
        from rearm_dgl.data import load_dataset

        data = load_dataset(data_cfg)
    model_cls = registry.get(cfg.model)
    check_against_data(cfg, data)
    if model_cls.needs_features:
        require_features(cfg.model, data)  # before the graph build, which could take minutes
    if graph is None and getattr(model_cls, "needs_graph", True):
        from rearm_dgl.graphs import load_or_build_graph

        graph = load_or_build_graph(data, cfg.graph)
    if data.features_note:
        log("features: %s", data.features_note)
    data_paths = data_paths_of(data, data_cfg)

    model, optimizer, sampler, data = training_parts(cfg, data, graph, device)
    stopper = EarlyStopping(train_cfg.patience, cfg.eval.stop_decimals)
    best = BestWeights(model)  # the initial weights, until an epoch improves
    best_valid: dict[str, float] = {}
    start_epoch, elapsed_before, stop_reason, peak_before = 1, 0.0, None, (0, None)

    if checkpoint is not None:
        if checkpoint.get("data_fingerprint") and data.fingerprint \
                and checkpoint["data_fingerprint"] != data.fingerprint:
            raise DataError(data.source, "the dataset changed since this run began "
                            "(its content fingerprint differs)",
                            "restore the original data or start a new run")
        start_epoch, elapsed_before, stop_reason, best_valid, peak_before = restore(
            checkpoint, Path(run_dir), model, optimizer, stopper, best)

    # Run directory (held by this process from here on) and writers.
    if resuming:
        tracking.truncate_metrics(run_dir, start_epoch - 1)
        log("resuming %s from epoch %d%s", run_dir, start_epoch - 1,
            "" if checkpoint is not None else " (it stopped before its first checkpoint)")
    else:
        run_dir = _claim_run_dir(run_dir, runs_dir, data.name, cfg, held)
        tracking.write_config(run_dir, cfg)
        tracking.truncate_metrics(run_dir, 0)  # an empty metrics.jsonl from the start
    tracking.write_env(run_dir, device, data.features_note,
                       resumed_at_epoch=start_epoch - 1 if resuming else None,
                       data_paths=data_paths)
    tracker = tracking.TensorBoardTracker(run_dir, purge_step=start_epoch if resuming else None)

    def peaks() -> tuple[int, int | None]:
        rss, gpu = tracking.peak_memory(device)
        return max(rss, peak_before[0]), (gpu if peak_before[1] is None
                                          else max(gpu or 0, peak_before[1]))

    def save_last(epoch: int, reason: str | None) -> None:
        rss, gpu = peaks()
        save_checkpoint(run_dir / tracking.CHECKPOINT_LAST, {
            "config": cfg.to_dict(), "epoch": epoch, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "early_stopping": stopper.state_dict(),
            "best_valid": best_valid,
            # The best weights ride along unless they are the model's own.
            "best_model": None if best.epoch == epoch else best.state,
            "rng": rng_state(), "data_fingerprint": data.fingerprint, "data_paths": data_paths,
            "wall_seconds": elapsed_before + time.perf_counter() - t_start,
            "stop_reason": reason, "peak_rss_bytes": rss, "peak_gpu_bytes": gpu,
        })

    epoch = start_epoch - 1
    saved_epoch = epoch if checkpoint is not None else None  # what checkpoint_last.pt holds
    last_write = _clock()
    interval = train_cfg.checkpoint_minutes * 60.0
    # No total: the 2000-epoch maximum says nothing about when early stopping ends a run, so
    # the bar counts epochs and shows the patience instead of an ETA. disable=None hides it
    # when stderr is not a terminal (CI logs keep the log lines).
    bar = tqdm(total=None, initial=epoch, disable=True if quiet else None, unit="epoch",
               desc=f"{cfg.model}/{data.name}", dynamic_ncols=True)
    try:
        while stop_reason is None and epoch < train_cfg.epochs:  # (a resumed run may be done)
            epoch += 1
            t_epoch = time.perf_counter()
            _seed_epoch(train_cfg.seed, epoch)

            # The model's learning-rate schedule (initial_lr is saved with the optimiser, so
            # a resumed run scales the same base rate) and its pre-epoch hook.
            for group in optimizer.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * model.lr_scale(epoch)
            model.train()
            model.start_epoch(epoch)

            # Train one epoch of BPR batches, copied to the device once per epoch. Losses are
            # summed as device tensors: no host sync inside the batch loop.
            sums: dict[str, torch.Tensor] = {}
            n_batches = 0
            for batch in sampler.batches(epoch, device):
                out = model.loss(batch)
                optimizer.zero_grad(set_to_none=True)
                out.total.backward()
                optimizer.step()
                for part, value in (("total", out.total), *out.parts.items()):
                    value = value.detach()
                    sums[part] = sums[part] + value if part in sums else value
                n_batches += 1
            # The epoch's one host read of the losses.
            means = (torch.stack(list(sums.values())) / max(n_batches, 1)).tolist() if sums \
                else []
            loss = dict(zip(sums, means))
            if not math.isfinite(loss.get("total", 0.0)):
                stop_reason = STOP_NAN
                logger.error("epoch %d: the loss became %s; stopping and keeping the best "
                             "epoch so far (%d). Try a lower train.lr.",
                             epoch, loss["total"], stopper.best_epoch)
                epoch -= 1  # this epoch did not complete
                break
            t_valid = time.perf_counter()

            # Validate; keep the best weights in memory.
            valid = evaluate(model_scorer(model), data, "valid", cfg.eval, device).metrics
            if stopper.update(valid[metric], epoch):
                best_valid = dict(valid)
                best.update(model, epoch)
            if stopper.should_stop:
                stop_reason = STOP_EARLY
            elif epoch == train_cfg.epochs:
                stop_reason = STOP_MAX_EPOCHS
            t_end = time.perf_counter()
            seconds = t_end - t_epoch
            lr = float(optimizer.param_groups[0]["lr"])

            # Log, checkpoint when the interval has passed, then let callbacks see the epoch.
            tracking.append_metrics(run_dir, {
                "epoch": epoch, "loss": loss, "valid": valid, "seconds": seconds,
                "train_seconds": t_valid - t_epoch, "eval_seconds": t_end - t_valid, "lr": lr})
            tracker.log_epoch(epoch, loss, valid, seconds, lr)
            line = progress_line(epoch, metric, valid[metric], stopper)
            log("%s  loss %.4f  %.1fs", line, loss.get("total", float("nan")), seconds)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.get('total', float('nan')):.4f}",
                            best=f"{stopper.best:.4f}@{stopper.best_epoch}",
                            no_gain=f"{stopper.bad_epochs}/{stopper.patience}")
            if _clock() - last_write >= interval:
                save_last(epoch, stop_reason)
                saved_epoch, last_write = epoch, _clock()
            if progress is not None:
                progress(line)
            for callback in callbacks:
                try:
                    callback(epoch, dict(valid))
                except Exception:
                    if policy == "none":  # a stopped trial keeps nothing big either
                        prune(run_dir, policy)
                    raise
    except BaseException as exc:
        bar.close()
        tracker.close()
        if isinstance(exc, KeyboardInterrupt):
            logger.warning("interrupted at epoch %d; rearm-dgl train --resume %s continues "
                           "from epoch %d%s", epoch, run_dir, saved_epoch or 0,
                           "" if saved_epoch is not None else
                           f" (no checkpoint yet: one is written every "
                           f"train.checkpoint_minutes={train_cfg.checkpoint_minutes:g})")
        raise
    bar.close()
    stop_reason = stop_reason or STOP_MAX_EPOCHS
    if tracking.CHECKPOINT_LAST in KEPT[policy] and saved_epoch != epoch:
        save_last(epoch, stop_reason)  # the final state, which this policy keeps

    # Test once, with the best validation weights.
    model.load_state_dict(best.state)
    if stopper.best_epoch == 0:  # no epoch completed: report the initial weights
        best_valid = evaluate(model_scorer(model), data, "valid", cfg.eval, device).metrics
    test = evaluate(model_scorer(model), data, "test", cfg.eval, device)
    tracking.write_per_user_test(run_dir, test)
    if tracking.CHECKPOINT_BEST in KEPT[policy]:
        save_checkpoint(run_dir / tracking.CHECKPOINT_BEST, {
            "config": cfg.to_dict(), "epoch": best.epoch, "model": best.state,
            "valid": best_valid, "data_fingerprint": data.fingerprint, "data_paths": data_paths})
    wall = elapsed_before + time.perf_counter() - t_start
    n_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    results = {
        "model": cfg.model, "dataset": data.name, "seed": train_cfg.seed,
        "best_epoch": stopper.best_epoch, "epochs_run": epoch, "stop_reason": stop_reason,
        "metric": metric, "valid": best_valid, "test": test.metrics, "wall_seconds": wall,
        "device": str(device), "data_fingerprint": data.fingerprint,
        "config_fingerprint": tracking.config_fingerprint(cfg),
        "features_note": data.features_note, "status": "completed",
        "efficiency": tracking.efficiency(run_dir, *peaks(), n_parameters),
    }
    tracking.write_results(run_dir, results)
    prune(run_dir, policy)  # the run is complete: only what the policy keeps remains
    tracker.log_hparams(cfg, best_valid, test.metrics, metric)
    tracker.close()
    log("done: %s after %d epochs; best epoch %d, valid %s %.4f, test %s %.4f  (%s)",
        stop_reason, epoch, stopper.best_epoch, metric, best_valid.get(metric, float("nan")),
        metric, test.metrics.get(metric, float("nan")), run_dir)
    return FitResult(run_dir=run_dir, best_epoch=stopper.best_epoch, epochs_run=epoch,
                     stop_reason=stop_reason, valid=dict(best_valid), test=dict(test.metrics),
                     wall_seconds=wall, features_note=data.features_note, results=results)


def rescore(run_dir: str | Path, split: str = "test", device: str | None = None, data=None,
            graph=None):
    """Evaluate a run's best validation weights on ``split`` again.

    Args:
        run_dir: A run folder written by :func:`fit`.
        split: ``"valid"`` or ``"test"``.
        device: ``auto``, ``cpu`` or ``cuda``; default: the run's ``train.device``.
        data: The loaded dataset; loaded from the run's config when None (relative paths
            resolve against the folder the run started from).
        graph: The relation heterograph; built (or read from cache) when None.

    Returns:
        The :class:`~rearm_dgl.evaluation.EvalResult`.

    Raises:
        DataError: No readable best weights (the message says when the run's
            ``train.keep_checkpoints`` removed them), or the dataset changed since the run.
    """
    state = best_state(run_dir)
    cfg = config_from_dict(state["config"])
    torch_device = resolve_device(device or cfg.train.device)
    if data is None:
        from rearm_dgl.data import load_dataset

        data = load_dataset(recorded_data_config(cfg, state["data_paths"]))
    if state["data_fingerprint"] and data.fingerprint \
            and state["data_fingerprint"] != data.fingerprint:
        raise DataError(data.source, f"the dataset changed since run {run_dir} was trained "
                        "(its content fingerprint differs)", "restore the original data")
    model_cls = registry.get(cfg.model)
    if graph is None and getattr(model_cls, "needs_graph", True):
        from rearm_dgl.graphs import load_or_build_graph

        graph = load_or_build_graph(data, cfg.graph)
    model = model_cls.build(cfg.params, data, graph, torch_device)
    model.load_state_dict(state["model"])
    return evaluate(model_scorer(model), data, split, cfg.eval, torch_device)


# ---------------------------------------------------------------------------------------
# The run folder


def _claim_run_dir(run_dir: str | Path | None, runs_dir: str | Path, dataset: str,
                   cfg: RunConfig, held: contextlib.ExitStack) -> Path:
    """Create (or take) the run folder and hold it for this process until ``held`` closes."""
    if run_dir is None:
        run_dir = tracking.new_run_dir(runs_dir, dataset, cfg.model, cfg.train.seed)
        held.enter_context(tracking.hold_run_dir(run_dir))
        return run_dir
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    held.enter_context(tracking.hold_run_dir(run_dir))
    if (run_dir / tracking.CONFIG_FILE).exists():
        raise ConfigError(f"{run_dir}: already holds a run; continue it with resume, or "
                          f"choose an empty folder")
    return run_dir


__all__ = ["Callback", "EarlyStopping", "FitResult", "RESUME_MAY_CHANGE", "STOP_EARLY",
           "STOP_MAX_EPOCHS", "STOP_NAN", "fit", "load_checkpoint", "progress_line", "rescore",
           "resolve_device", "seed_everything", "training_parts"]
