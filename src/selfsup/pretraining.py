"""Pretraining as one call: data, model, a locked run directory, the training loop, evaluation.

:func:`pretrain` is what ``selfsup pretrain`` and ``selfsup semi`` run. It sits above
both :mod:`selfsup.train` (the loop) and :mod:`selfsup.eval` (what measures the result),
so neither of those imports the other.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import Config, save_config
from .data import DataSplits, load_data, with_subset
from .distributed import broadcast_object, init_from_env, local_device, rank, world_size
from .errors import ConfigError, RunDirError, SelfsupError
from .eval import Trained, evaluate_classifiers, evaluate_run
from .eval.monitor import Monitor
from .machine import note_commit, record_machine
from .methods import Method, build_method, resolve_method
from .optim import method_optimizer
from .rundir import (
    CHECKPOINTS,
    CONFIG,
    METRICS_JSONL,
    append_jsonl,
    check_not_busy,
    default_run_dir,
    load_run_config,
    prepare_run_dir,
    read_jsonl,
    run_lock,
)
from .runtime import resolve_device, set_threads, use_bf16
from .train.job import Job
from .train.loop import build_sampler, check_resume_config, fit, peak_memory_mb, resolve_config, start
from .train.sampler import StepSampler
from .train.step import StepContext, Steps


@dataclass
class RunResult:
    """What :func:`pretrain` returns.

    Attributes:
        run_dir: The run directory.
        summary: Final training record (loss, wall time, views/s, peak memory, ...).
        metrics: Evaluation results (``knn_top1``, ``linear_top1``) when evaluated.
    """

    run_dir: Path
    summary: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)


def pretrain(
    cfg: Config,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train ``cfg.method`` and (if ``cfg.train.eval_after``) evaluate the result.

    Self-supervised and supervised methods train on the whole training split; with
    ``cfg.semi.labels`` (what ``selfsup semi`` sets) only that many labelled images keep
    their labels. Evaluation: kNN and linear probe of the encoder, plus the test accuracy
    of the method's own classifier where it has one (semi-supervised runs report only
    the latter: a probe would use every label).

    Under ``torchrun`` each process trains on its share of every global batch
    (``train.batch_size`` in all) with DistributedDataParallel; rank 0 alone writes the
    run directory and evaluates.

    Args:
        cfg: The run's config (see :mod:`selfsup.config`).
        out: Run directory (default ``runs/<method>-<backbone>-<time>``).
        resume: Continue the run in ``out`` from its newest checkpoint.
        overwrite: Replace the run in ``out``.
        log: Where one-line status messages go.

    Returns:
        The run directory, a training summary and the evaluation metrics.

    Raises:
        SelfsupError: For bad config, data or run directory; :class:`Interrupted` after a
            SIGINT/SIGTERM (with a checkpoint saved).
    """
    t = cfg.train
    note_commit()  # the code this run starts with, whatever is edited while it trains
    set_threads(t.num_threads)
    init_from_env()
    leader = rank() == 0
    log = log if leader else (lambda _msg: None)
    device = resolve_device(local_device(t.device))
    run_dir = Path(out) if out is not None else default_run_dir(cfg.method.name, cfg.model.backbone)

    # Everything that can fail on bad input happens before the run directory is touched.
    if leader:
        check_not_busy(run_dir)
    cfg = resolve_method(cfg)  # the method's own settings, checked before anything is touched
    _check_distributed(cfg, device)
    whole = load_data(cfg.data, progress=t.progress and leader, subset=False)
    splits = with_subset(whole, cfg.data.subset, t.seed)
    cfg = resolve_config(cfg, splits)
    sampler = build_sampler(cfg, splits)
    torch.manual_seed(t.seed)
    model = build_method(cfg, len(splits.train.classes))
    lock = ExitStack()
    existing = _claim(cfg, run_dir, (resume, overwrite), lock)
    with lock:
        return _train_and_evaluate(cfg, model, (splits, whole), sampler, run_dir, existing, device, log)


def _claim(cfg: Config, run_dir: Path, again: tuple[bool, bool], lock: ExitStack) -> bool:
    """Rank 0 locks (into ``lock``) and prepares the run directory; every rank learns the outcome or the error.

    Args:
        cfg: The resolved config (saved in a new run directory).
        run_dir: The run directory.
        again: (resume, overwrite), as :func:`pretrain` takes them.
        lock: Holds the run directory's lock while the caller trains.

    Returns:
        Whether the run directory holds a run to continue.
    """
    outcome: tuple[bool, str | None] = (False, None)
    if rank() == 0:
        try:
            lock.enter_context(run_lock(run_dir, "selfsup pretrain"))
            outcome = (_prepare(cfg, run_dir, *again), None)
        except SelfsupError as e:
            lock.close()
            if world_size() == 1:
                raise
            outcome = (False, str(e))
    existing, error = broadcast_object(outcome)
    if error:
        raise RunDirError(error)
    return bool(existing)


def _train_and_evaluate(
    cfg: Config,
    model: Method,
    data: tuple[DataSplits, DataSplits],
    sampler: StepSampler,
    run_dir: Path,
    existing: bool,
    device: torch.device,
    log: Callable[[str], None],
) -> RunResult:
    """The part of :func:`pretrain` after the run directory is ready (and locked by rank 0).

    ``data`` is (the training data, the whole dataset): evaluation gets the latter
    as it is, not loaded again.
    """
    t, (splits, whole) = cfg.train, data
    leader = rank() == 0
    job = _job(cfg, model, splits, sampler, run_dir, device)
    model = job.model
    start(job, existing, log)
    start_step, start_time = job.state.step, job.state.train_time
    if t.compile:
        model.backbone.compile(mode=None if t.compile_mode == "default" else t.compile_mode)
    if world_size() > 1:
        from torch.nn.parallel import DistributedDataParallel

        job.ctx.step_fn = DistributedDataParallel(
            Steps(model), device_ids=[device.index] if device.type == "cuda" else None
        )
    if t.knn_every and leader:
        job.monitor = Monitor(cfg, splits, device, train_images=job.data[0])
    final_loss = fit(job)
    summary = _summary(job, len(splits.train), final_loss)
    result = RunResult(run_dir=run_dir, summary=summary)
    if not leader:
        return result
    state = job.state
    append_jsonl(run_dir / METRICS_JSONL, summary)
    steps = [start_step, state.step]
    record_machine(run_dir, "train", state.train_time - start_time, device, steps=steps, bf16=job.ctx.bf16)
    log(training_line(summary))
    if t.eval_after:
        evaluate = evaluate_run if cfg.semi.labels is None else evaluate_classifiers
        result.metrics = evaluate(run_dir, log=log, trained=Trained(model, state.step, whole))
    return result


def _job(
    cfg: Config, model: Method, splits: DataSplits, sampler: StepSampler, run_dir: Path, device: torch.device
) -> Job:
    """The training job: the model on the device (SyncBatchNorm where asked), its optimizer, the data uploaded."""
    t = cfg.train
    model.to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    if world_size() > 1 and t.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    images = torch.from_numpy(splits.train.images).to(device)  # uint8, resident on the device
    labels = torch.from_numpy(splits.train.labels).to(device)
    ctx = StepContext(device, use_bf16(t.precision, device))
    extra = {"classes": list(splits.train.classes), "method": cfg.method.name}
    return Job(cfg, model, method_optimizer(model, cfg), sampler, (images, labels), run_dir, ctx, extra)


def training_line(summary: dict[str, Any]) -> str:
    """The line pretraining prints when it ends, from its summary record (also what the docs quote)."""
    return (
        f"trained {summary['epochs']:.3g} epochs ({summary['step']} steps) in {summary['train_time_s']:.0f} s, "
        f"{summary['views_per_s']:.0f} views/s, final loss {summary['final_loss']:.4f}"
    )


def _summary(job: Job, n_train: int, final_loss: float | None) -> dict[str, Any]:
    """The run's last record in metrics.jsonl."""
    state, device, cfg = job.state, job.ctx.device, job.cfg
    if final_loss is None and rank() == 0:  # resumed after the last epoch: as it was recorded
        final_loss = next((r["epoch_loss"] for r in reversed(read_jsonl(job.run_dir / METRICS_JSONL))
                           if "epoch_loss" in r), None)  # fmt: skip
    images_per_step = len(job.sampler(0)[0])
    spe = job.sampler.steps_per_epoch
    return {
        "step": state.step,
        "summary": True,
        "final_loss": final_loss if final_loss is not None else float("nan"),
        "train_time_s": state.train_time,
        "views_per_s": state.step * images_per_step * job.model.n_views / max(state.train_time, 1e-9),
        "peak_memory_mb": peak_memory_mb(device),
        "device": str(device),
        "bf16": job.ctx.bf16,
        "processes": world_size(),
        "n_train": n_train,
        # A time-budgeted run trains the planned steps, not train.epochs.
        "epochs": cfg.train.epochs if cfg.train.time_budget is None else state.step / spe,
    }


def _check_distributed(cfg: Config, device: torch.device) -> None:
    """Batch sizes that split evenly over the processes; SyncBatchNorm only on GPUs."""
    w = world_size()
    if cfg.train.sync_bn and device.type != "cuda":
        raise ConfigError("train.sync_bn needs CUDA GPUs (PyTorch's SyncBatchNorm runs on GPUs only)")
    if w == 1:
        return
    if cfg.train.batch_size % w:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} must be a multiple of the {w} processes")
    if cfg.train.batch_size // w < 2:
        raise ConfigError(
            f"train.batch_size {cfg.train.batch_size} gives each of the {w} processes fewer than 2 images; "
            "BatchNorm and the losses use batch statistics, so each needs at least 2"
        )
    if cfg.semi.labels is not None and cfg.semi.labeled_batch_size % w:
        raise ConfigError(
            f"semi.labeled_batch_size {cfg.semi.labeled_batch_size} must be a multiple of the {w} processes"
        )


def _prepare(cfg: Config, run_dir: Path, resume: bool, overwrite: bool) -> bool:
    """Create or check the run directory (rank 0). True when there is a run to continue."""
    existing = prepare_run_dir(run_dir, resume, overwrite)
    if existing:
        check_resume_config(load_run_config(run_dir), cfg, run_dir)
        # Temporary files of a checkpoint write that a kill interrupted.
        for stale in (run_dir / CHECKPOINTS).glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    else:
        save_config(cfg, run_dir / CONFIG)
    return existing
