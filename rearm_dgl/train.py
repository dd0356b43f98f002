"""Training: one model on one dataset, from a config to ``results.json``.

:func:`fit` reads top to bottom: resolve the device, seed, load the data and graph, build the
model and optimiser, then run epochs of seeded BPR batches. After every epoch it evaluates on
validation, logs, checkpoints and calls the callbacks; it stops early on ``eval.metric``
(default Recall@20) and finally scores the test split once, with the best validation
checkpoint (spec section 5).

    result = fit(build_config("mf", "demo"))
    result.test["Recall@20"], result.run_dir

Every epoch's randomness (batches, negatives, dropout) depends only on ``(seed, epoch)``, so
the same seed gives the same metrics on CPU, and a run resumed from ``checkpoint_last.pt``
continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

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
from rearm_dgl.config import RunConfig, check_against_data, config_from_dict, with_overrides
from rearm_dgl.errors import ConfigError, DataError
from rearm_dgl.evaluation import evaluate, model_scorer
from rearm_dgl.io_utils import atomic_path
from rearm_dgl.models import registry
from rearm_dgl.models.base import require_features
from rearm_dgl.sampling import BPRSampler

logger = logging.getLogger(__name__)

STOP_EARLY = "early_stopping"
STOP_MAX_EPOCHS = "max_epochs"
STOP_NAN = "nan_loss"
CHECKPOINT_FORMAT = 2

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
    """

    def __init__(self, patience: int):
        self.patience = patience
        self.best = -math.inf
        self.best_epoch = 0
        self.bad_epochs = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record ``value`` for ``epoch``; True if it is a new best."""
        if value > self.best:  # NaN never improves
            self.best, self.best_epoch, self.bad_epochs = float(value), epoch, 0
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


def _seed_epoch(seed: int, epoch: int) -> None:
    # Each epoch's dropout and any model-side randomness depend on (seed, epoch) only, so a
    # resumed run replays the uninterrupted one exactly.
    seed_everything(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))


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

    Args:
        cfg: The resolved run config. With ``resume`` it may be omitted (the saved one is
            used); if given it must match the saved one except for ``train.device``.
        run_dir: Use this folder for the run instead of a new one under ``runs_dir``.
        runs_dir: Parent of new run folders (``<runs_dir>/<dataset>/<model>/<stamp>-s<seed>``).
        data: The loaded :class:`~rearm_dgl.data.dataset.Interactions`; loaded from
            ``cfg.data`` when None.
        graph: The relation heterograph; built (or read from cache) when None and the model
            uses one.
        callbacks: ``callback(epoch, valid_metrics)`` after each validation. An exception
            stops the run and propagates once the writers are closed; ``checkpoint_last.pt``
            is already written, so the run can be resumed.
        resume: A run folder to continue from its ``checkpoint_last.pt``.
        quiet: No progress bar and no per-epoch log lines.
        progress: Called after each validated epoch with one line such as
            ``epoch 40 valid Recall@20 0.0810 (best 0.0832 @35, 5/20 without gain)``; the
            tuner and the experiment runner tag it with the trial or cell and print it.

    Returns:
        A :class:`FitResult`; ``results.json`` in the run folder holds the same.

    Raises:
        ConfigError: Bad config, a model that needs features the data lacks, or a resume
            config mismatch.
        DataError: The dataset cannot be loaded, or changed since the resumed run began.
    """
    t_start = time.perf_counter()
    log = logger.debug if quiet else logger.info
    checkpoint = None
    if resume is not None:
        run_dir = Path(resume)
        cfg, checkpoint = _load_resume(run_dir, cfg)
    elif cfg is None:
        raise ConfigError("fit: pass a config, or resume=RUN_DIR to continue a run")
    train_cfg, metric = cfg.train, cfg.eval.metric

    # Device and seeds.
    device = resolve_device(train_cfg.device)
    seed_everything(train_cfg.seed)

    # Data and graph.
    if data is None:
        from rearm_dgl.data import load_dataset

        data = load_dataset(cfg.data)
    model_cls = registry.get(cfg.model)
    check_against_data(cfg, data)
    if model_cls.needs_features:
        require_features(cfg.model, data)  # before the graph build, which could take minutes
    if graph is None and getattr(model_cls, "needs_graph", True):
        from rearm_dgl.graphs import load_or_build_graph

        graph = load_or_build_graph(data, cfg.graph)
    if data.features_note:
        log("features: %s", data.features_note)

    # Model, optimiser, batches; the init is seeded so one seed gives one set of weights.
    torch.manual_seed(train_cfg.seed)
    model = model_cls.build(cfg.params, data, graph, device)
    optimizer = model.configure_optimizer(train_cfg.lr)
    sampler = BPRSampler(data, train_cfg.negatives, train_cfg.batch_size, train_cfg.seed)
    stopper = EarlyStopping(train_cfg.patience)
    best_valid: dict[str, float] = {}
    start_epoch, elapsed_before, stop_reason = 1, 0.0, None

    if checkpoint is not None:
        if checkpoint.get("data_fingerprint") and data.fingerprint \
                and checkpoint["data_fingerprint"] != data.fingerprint:
            raise DataError(data.source, "the dataset changed since this run began "
                            "(its content fingerprint differs)",
                            "restore the original data or start a new run")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        stopper.load_state_dict(checkpoint["early_stopping"])
        best_valid = dict(checkpoint["best_valid"])
        start_epoch = int(checkpoint["epoch"]) + 1
        elapsed_before = float(checkpoint.get("wall_seconds", 0.0))
        stop_reason = checkpoint.get("stop_reason")
        _set_rng_state(checkpoint["rng"])

    # Run directory and writers.
    if resume is not None:
        run_dir = Path(resume)
        tracking.truncate_metrics(run_dir, start_epoch - 1)
        log("resuming %s from epoch %d", run_dir, start_epoch - 1)
    else:
        run_dir = _claim_run_dir(run_dir, runs_dir, data.name, cfg)
        tracking.write_config(run_dir, cfg)
        tracking.truncate_metrics(run_dir, 0)  # an empty metrics.jsonl from the start
    tracking.write_env(run_dir, device, data.features_note,
                       resumed_at_epoch=start_epoch - 1 if resume is not None else None)
    tracker = tracking.TensorBoardTracker(run_dir, purge_step=start_epoch if resume else None)

    # checkpoint_best.pt holds the weights of the best validation epoch (what test and
    # `rearm-dgl evaluate` score); checkpoint_last.pt adds what resuming needs. The best
    # weights live on disk only: at Baby scale a second in-memory copy would cost 0.5 GB.
    def save_best(epoch: int) -> None:
        _save_checkpoint(run_dir / tracking.CHECKPOINT_BEST, {
            "format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "epoch": epoch,
            "model": model.state_dict(), "valid": best_valid,
            "data_fingerprint": data.fingerprint})

    def save_last(epoch: int, reason: str | None) -> None:
        _save_checkpoint(run_dir / tracking.CHECKPOINT_LAST, {
            "format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "epoch": epoch,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "early_stopping": stopper.state_dict(), "best_valid": best_valid,
            "rng": _rng_state(), "data_fingerprint": data.fingerprint,
            "wall_seconds": elapsed_before + time.perf_counter() - t_start,
            "stop_reason": reason,
        })

    if resume is None:
        save_best(0)  # the initial weights, until an epoch improves

    epoch = start_epoch - 1
    # disable=None hides the bar when stderr is not a terminal (CI logs keep the log lines).
    bar = tqdm(total=train_cfg.epochs, initial=epoch, disable=True if quiet else None, unit="epoch",
               desc=f"{cfg.model}/{data.name}", dynamic_ncols=True)
    try:
        while stop_reason is None and epoch < train_cfg.epochs:
            epoch += 1
            t_epoch = time.perf_counter()
            _seed_epoch(train_cfg.seed, epoch)

            # The model's learning-rate schedule (initial_lr is saved with the optimiser, so
            # a resumed run scales the same base rate) and its pre-epoch hook.
            for group in optimizer.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * model.lr_scale(epoch)
            model.train()
            model.start_epoch(epoch)

            # Train one epoch of BPR batches. Losses are summed as device tensors: no host
            # sync inside the batch loop.
            sums: dict[str, torch.Tensor] = {}
            n_batches = 0
            for batch in sampler.batches(epoch):
                out = model.loss(batch.to(device))
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

            # Validate, keep the best weights.
            valid = evaluate(model_scorer(model), data, "valid", cfg.eval, device).metrics
            if stopper.update(valid[metric], epoch):
                best_valid = dict(valid)
                save_best(epoch)
            if stopper.should_stop:
                stop_reason = STOP_EARLY
            seconds = time.perf_counter() - t_epoch
            lr = float(optimizer.param_groups[0]["lr"])

            # Log and checkpoint, then let callbacks see the epoch (they may raise).
            tracking.append_metrics(run_dir, {"epoch": epoch, "loss": loss, "valid": valid,
                                              "seconds": seconds, "lr": lr})
            tracker.log_epoch(epoch, loss, valid, seconds, lr)
            log("epoch %d/%d  loss %.4f  valid %s %.4f  best %.4f @%d  %.1fs", epoch,
                train_cfg.epochs, loss.get("total", float("nan")), metric, valid[metric],
                stopper.best, stopper.best_epoch, seconds)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.get('total', float('nan')):.4f}",
                            best=f"{stopper.best:.4f}@{stopper.best_epoch}")
            if (epoch % train_cfg.checkpoint_every == 0 or stop_reason is not None
                    or epoch == train_cfg.epochs):
                save_last(epoch, stop_reason)
            if progress is not None:
                progress(progress_line(epoch, metric, valid[metric], stopper))
            for callback in callbacks:
                callback(epoch, dict(valid))
    except BaseException as exc:
        bar.close()
        tracker.close()
        if isinstance(exc, KeyboardInterrupt):
            logger.warning("interrupted at epoch %d; continue with: rearm-dgl train --resume %s",
                           epoch, run_dir)
        raise
    bar.close()
    stop_reason = stop_reason or STOP_MAX_EPOCHS

    # Test once, with the best validation weights.
    model.load_state_dict(load_checkpoint(run_dir / tracking.CHECKPOINT_BEST)["model"])
    if stopper.best_epoch == 0:  # no epoch completed: report the initial weights
        best_valid = evaluate(model_scorer(model), data, "valid", cfg.eval, device).metrics
        save_best(0)
    test = evaluate(model_scorer(model), data, "test", cfg.eval, device)
    tracking.write_per_user_test(run_dir, test)
    wall = elapsed_before + time.perf_counter() - t_start
    results = {
        "model": cfg.model, "dataset": data.name, "seed": train_cfg.seed,
        "best_epoch": stopper.best_epoch, "epochs_run": epoch, "stop_reason": stop_reason,
        "metric": metric, "valid": best_valid, "test": test.metrics, "wall_seconds": wall,
        "device": str(device), "data_fingerprint": data.fingerprint,
        "config_fingerprint": tracking.config_fingerprint(cfg),
        "features_note": data.features_note, "status": "completed",
    }
    tracking.write_results(run_dir, results)
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
    """Evaluate a run's ``checkpoint_best.pt`` on ``split`` again.

    Args:
        run_dir: A run folder written by :func:`fit`.
        split: ``"valid"`` or ``"test"``.
        device: ``auto``, ``cpu`` or ``cuda``; default: the run's ``train.device``.
        data: The loaded dataset; loaded from the run's config when None.
        graph: The relation heterograph; built (or read from cache) when None.

    Returns:
        The :class:`~rearm_dgl.evaluation.EvalResult`.

    Raises:
        DataError: No readable checkpoint, or the dataset changed since the run.
    """
    path = Path(run_dir) / tracking.CHECKPOINT_BEST
    if not path.is_file():
        raise DataError(run_dir, f"no {tracking.CHECKPOINT_BEST} in this folder",
                        "point to a run folder written by `rearm-dgl train` (it is written "
                        "after the first epoch)")
    ckpt = load_checkpoint(path)
    cfg = config_from_dict(ckpt["config"])
    torch_device = resolve_device(device or cfg.train.device)
    if data is None:
        from rearm_dgl.data import load_dataset

        data = load_dataset(cfg.data)
    if ckpt.get("data_fingerprint") and data.fingerprint \
            and ckpt["data_fingerprint"] != data.fingerprint:
        raise DataError(data.source, f"the dataset changed since run {run_dir} was trained "
                        "(its content fingerprint differs)", "restore the original data")
    model_cls = registry.get(cfg.model)
    if graph is None and getattr(model_cls, "needs_graph", True):
        from rearm_dgl.graphs import load_or_build_graph

        graph = load_or_build_graph(data, cfg.graph)
    model = model_cls.build(cfg.params, data, graph, torch_device)
    model.load_state_dict(ckpt["model"])
    return evaluate(model_scorer(model), data, split, cfg.eval, torch_device)


# ---------------------------------------------------------------------------------------
# Checkpoints, resume and RNG state


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`fit` (tensors are mapped to CPU).

    Raises:
        DataError: The file is missing or not a rearm-dgl checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found",
                        "point to a run folder written by `rearm-dgl train`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same to users
        raise DataError(path, f"cannot read the checkpoint ({type(exc).__name__}: {exc})",
                        "the file is damaged; start a new run") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DataError(path, "not a rearm-dgl checkpoint (unknown format)",
                        "point to a checkpoint written by this version of rearm-dgl")
    return ckpt


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def _load_resume(run_dir: Path, cfg: RunConfig | None) -> tuple[RunConfig, dict[str, Any]]:
    if not run_dir.is_dir():
        raise ConfigError(f"--resume {run_dir}: no such run folder")
    results_path = run_dir / tracking.RESULTS_FILE
    if results_path.exists():
        raise ConfigError(f"--resume {run_dir}: this run already completed "
                          f"({tracking.RESULTS_FILE} exists); start a new run instead")
    last = run_dir / tracking.CHECKPOINT_LAST
    if not last.exists():
        raise ConfigError(f"--resume {run_dir}: no {tracking.CHECKPOINT_LAST}; the run stopped "
                          f"before its first checkpoint, so start it again")
    ckpt = load_checkpoint(last)
    saved = config_from_dict(ckpt["config"])
    if cfg is not None:
        if (tracking.config_fingerprint(cfg) != tracking.config_fingerprint(saved)
                or cfg.train.seed != saved.train.seed):
            raise ConfigError(f"--resume {run_dir}: the given config differs from the run's "
                              f"saved config; only train.device may change on resume")
        saved = with_overrides(saved, {"train.device": cfg.train.device})
    return saved, ckpt


def _claim_run_dir(run_dir: str | Path | None, runs_dir: str | Path, dataset: str,
                   cfg: RunConfig) -> Path:
    if run_dir is None:
        return tracking.new_run_dir(runs_dir, dataset, cfg.model, cfg.train.seed)
    run_dir = Path(run_dir)
    if (run_dir / tracking.CONFIG_FILE).exists():
        raise ConfigError(f"{run_dir}: already holds a run; continue it with resume, or "
                          f"choose an empty folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": _to_lists(random.getstate()),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except (RuntimeError, IndexError):  # a different GPU count: epochs reseed anyway
            pass


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


__all__ = ["Callback", "EarlyStopping", "FitResult", "STOP_EARLY", "rescore",
           "STOP_MAX_EPOCHS", "STOP_NAN", "fit", "load_checkpoint", "resolve_device",
           "seed_everything"]

