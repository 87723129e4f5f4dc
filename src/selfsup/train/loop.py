"""The training loop: data on the device, batch augmentation, checkpoints, resume.

One loop serves every method: self-supervised pretraining (all images, labels unused),
supervised training, and semi-supervised training with ``semi.labels`` (a labelled
stream beside the unlabelled one, see :mod:`selfsup.train.sampler`).

Every random draw of a step (the batch, the augmentations, MoCo's shuffle) is a function
of ``(train.seed, step)``; together with checkpoints that hold the model (with its EMA
copies and queues), the optimizer and the loss accumulators, a run killed at any moment
and resumed reaches the same weights as one that never stopped.
"""

from __future__ import annotations

import math
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..augment import BatchAugment, resolve_augment
from ..config import Config, copy_config, diff, save_config
from ..data import DataSplits, channel_stats, class_balanced_indices, load_data
from ..distributed import all_reduce_mean, any_rank, broadcast_object, init_from_env, local_device, rank, world_size
from ..errors import ConfigError, RunDirError, SelfsupError, TrainingDivergedError
from ..eval.features import extract_features, feature_options
from ..eval.knn import knn_accuracy
from ..methods import build_method, method_class
from ..optim import build_optimizer, lr_factor, scaled_lr, set_lr
from ..runtime import autocast, resolve_device, set_threads, step_seed, use_bf16
from .checkpoint import load_latest, save_checkpoint
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
    truncate_jsonl,
)
from .sampler import StepSampler

#: Keys that may differ when resuming: they change how a run executes, not what it computes.
RESUME_FREE_KEYS = (
    "train.device",
    "train.precision",
    "train.compile",
    "train.compile_mode",

    "train.sync_bn",
    "train.num_threads",
    "train.progress",
    "train.log_every",
    "train.eval_after",
    "train.knn_every",
    "train.checkpoint_every",
    "train.checkpoint_minutes",
    "train.keep_checkpoints",
)


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


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved."""

    def __init__(self, step: int, run_dir: Path) -> None:
        super().__init__(f"interrupted at step {step}; checkpoint saved, continue with --resume --out {run_dir}")
        self.step = step


def resolve_config(cfg: Config, splits: DataSplits) -> Config:
    """Fill what depends on the method and the data: augmentation preset values, mean/std."""
    spec = method_class(cfg.method.name)
    out = copy_config(cfg)
    out.augment = resolve_augment(cfg.augment, spec.default_augment)  # type: ignore[attr-defined]
    if out.augment.mean is None or out.augment.std is None:
        mean, std = channel_stats(splits.train.images)
        out.augment = replace(out.augment, mean=out.augment.mean or mean, std=out.augment.std or std)
    return out


def check_resume_config(saved: Config, new: Config, run_dir: Path) -> None:
    """Refuse to resume with settings that would change what the run computes."""
    changed = {k: v for k, v in diff(saved, new).items() if k not in RESUME_FREE_KEYS}
    if changed:
        key, (old, now) = next(iter(changed.items()))
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise RunDirError(
            f"cannot resume {run_dir}: {key} was {old!r} and is now {now!r}{more}; "
            f"resume with the saved settings (selfsup pretrain --out {run_dir} --resume) or start a new run"
        )


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocations on a GPU, resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


@contextmanager
def _stop_signals() -> Iterator[dict[str, int]]:
    """Turn SIGINT/SIGTERM into a flag the loop checks after each step."""
    flag: dict[str, int] = {}
    previous = {}

    def handler(signum: int, _frame: Any) -> None:
        flag["signal"] = signum

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield flag
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


class Monitor:
    """kNN monitor on fixed, class-balanced subsets of the train and test splits."""

    def __init__(self, cfg: Config, splits: DataSplits, device: torch.device) -> None:
        n_bank = min(cfg.eval.monitor_train, len(splits.train))
        n_query = min(cfg.eval.monitor_test, len(splits.test))
        bank = class_balanced_indices(splits.train.labels, n_bank, seed=0)
        query = class_balanced_indices(splits.test.labels, n_query, seed=0)
        self.bank_images = splits.train.images[bank]
        self.bank_labels = torch.from_numpy(splits.train.labels[bank])
        self.query_images = splits.test.images[query]
        self.query_labels = torch.from_numpy(splits.test.labels[query])
        self.num_classes = len(splits.train.classes)
        self.cfg = cfg
        self.options = feature_options(cfg, device)

    def __call__(self, encoder: nn.Module) -> float:
        """Top-1 kNN accuracy (a fraction) of the encoder's features on the fixed subsets."""
        e = self.cfg.eval
        bank = extract_features(encoder, self.bank_images, **self.options)
        query = extract_features(encoder, self.query_images, **self.options)
        return knn_accuracy(
            bank, self.bank_labels, query, self.query_labels, self.num_classes, e.knn_k, e.knn_temperature
        )


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    augment: BatchAugment,
    images: torch.Tensor,
    labels: torch.Tensor,
    gen: torch.Generator,
    device: torch.device,
    bf16: bool,
    step: int = 0,
    epoch: float = 0.0,
    step_fn: Callable[[dict[str, Any]], dict[str, torch.Tensor]] | None = None,
    positions: torch.Tensor | None = None,
    total: int | None = None,
) -> torch.Tensor:
    """Augment one batch, run the method's step, update: the body of every training loop.

    Args:
        model: A method (see :mod:`selfsup.methods`).
        optimizer: Its optimizer, learning rate already set for this step.
        augment: The batch augmentation.
        images: uint8 (B, H, W, 3) on ``device``.
        labels: (B,) on ``device``; -1 marks an unlabelled image.
        gen: CPU generator for this step's randomness.
        device: The training device.
        bf16: Use bf16 autocast.
        step: Global step index (for methods with schedules of their own).
        epoch: Training progress in epochs (for ramp-ups).
        step_fn: What computes the losses (default ``model.training_step``; under
            torchrun the DistributedDataParallel wrapper, which syncs gradients).
        positions: Under torchrun, where these images sit in the global batch ...
        total: ... of this many images (so augmentation draws as one process would).

    Returns:
        The loss, detached, still on the device (reading it would synchronise).
    """
    views = augment(images, gen, n_views=int(model.n_views), positions=positions, total=total)  # type: ignore[arg-type]
    batch = {"views": views, "labels": labels, "generator": gen, "step": step, "epoch": epoch}
    with autocast(device, bf16):
        result = (step_fn or model.training_step)(batch)  # type: ignore[operator]
    loss = result["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    after_step = getattr(model, "after_optimizer_step", None)
    if after_step is not None:
        after_step()
    return loss.detach()


class _Steps(nn.Module):
    """Makes ``training_step`` the forward pass, so DistributedDataParallel can wrap it."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.method.training_step(batch)  # type: ignore[operator,no-any-return]


def local_positions(total: int, n_labeled: int, part: int, parts: int) -> torch.Tensor:
    """Positions of rank ``part``'s share of a global batch of ``total`` images.

    Each rank takes 1/parts of the labelled images (the first ``n_labeled``) and 1/parts
    of the others, so every rank's batch has the same mix.
    """
    n_other = total - n_labeled
    lab = torch.arange(part * n_labeled // parts, (part + 1) * n_labeled // parts)
    other = n_labeled + torch.arange(part * n_other // parts, (part + 1) * n_other // parts)
    return torch.cat([lab, other])


def build_sampler(cfg: Config, splits: DataSplits) -> StepSampler:
    """The step sampler for ``cfg``: one stream, or a labelled stream too with ``semi.labels``.

    Raises:
        ConfigError: If a semi-supervised method has no ``semi.labels``, or the batch is
            larger than the data.
    """
    spec = method_class(cfg.method.name)
    t, s = cfg.train, cfg.semi
    n_train = len(splits.train)
    if getattr(spec, "semi_supervised", False) and s.labels is None:
        raise ConfigError(
            f"method {cfg.method.name!r} learns from few labels: run "
            f"'selfsup semi --method {cfg.method.name} --labels N' (semi.labels)"
        )
    if n_train // t.batch_size == 0:
        raise ConfigError(f"train.batch_size {t.batch_size} is larger than the {n_train} training images")
    if s.labels is None:
        return StepSampler(n_train, t.batch_size, t.seed)
    if not getattr(spec, "uses_labels", False):
        raise ConfigError(f"semi.labels is set but method {cfg.method.name!r} does not use labels")
    labeled = class_balanced_indices(splits.train.labels, s.labels, t.seed)
    return StepSampler(
        n_train,
        t.batch_size,
        t.seed,
        labeled,
        s.labeled_batch_size,
        use_main=bool(getattr(spec, "semi_supervised", False)),
    )


class _Progress:
    """Counters carried across steps and checkpoints."""

    def __init__(self, device: torch.device) -> None:
        self.step, self.train_time, self.loss_count = 0, 0.0, 0
        self.loss_sum = torch.zeros((), device=device)
        self.epoch_loss_sum = torch.zeros((), device=device)

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "train_time_s": self.train_time,
            "loss_count": self.loss_count,
            "loss_sum": self.loss_sum.cpu(),
            "epoch_loss_sum": self.epoch_loss_sum.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.train_time = int(state["step"]), float(state["train_time_s"])
        self.loss_count = int(state["loss_count"])
        self.loss_sum.copy_(state["loss_sum"])
        self.epoch_loss_sum.copy_(state["epoch_loss_sum"])


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
    set_threads(t.num_threads)
    distributed = init_from_env()
    leader = rank() == 0
    log = log if leader else (lambda _msg: None)
    device = resolve_device(local_device(t.device))
    run_dir = Path(out) if out is not None else default_run_dir(cfg.method.name, cfg.model.backbone)

    # Everything that can fail on bad input happens before the run directory is touched.
    if leader:
        check_not_busy(run_dir)
    method_class(cfg.method.name)
    _check_distributed(cfg, device)
    splits = load_data(cfg.data, seed=t.seed, progress=t.progress and leader)
    cfg = resolve_config(cfg, splits)
    sampler = build_sampler(cfg, splits)
    torch.manual_seed(t.seed)
    model = build_method(cfg, len(splits.train.classes))
    # Rank 0 locks and prepares the run directory; every rank learns the outcome (or the error).
    lock = ExitStack()
    outcome: tuple[bool, str | None] = (False, None)
    if leader:
        try:
            lock.enter_context(run_lock(run_dir, "selfsup pretrain"))
            outcome = (_prepare(cfg, run_dir, resume, overwrite), None)
        except SelfsupError as e:
            lock.close()
            if not distributed:
                raise
            outcome = (False, str(e))
    existing, error = broadcast_object(outcome)
    if error:
        raise RunDirError(error)
    with lock:
        return _train_and_evaluate(cfg, model, splits, sampler, run_dir, existing, device, log)


def _train_and_evaluate(
    cfg: Config,
    model: nn.Module,
    splits: DataSplits,
    sampler: StepSampler,
    run_dir: Path,
    existing: bool,
    device: torch.device,
    log: Callable[[str], None],
) -> RunResult:
    """The part of :func:`pretrain` after the run directory is ready (and locked by rank 0)."""
    t = cfg.train
    distributed, leader = world_size() > 1, rank() == 0
    bf16 = use_bf16(t.precision, device)
    model.to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    if distributed and t.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(model, cfg.optim, t.batch_size)
    progress = _Progress(device)
    if existing:
        loaded = load_latest(run_dir)
        if loaded is not None:
            state, path = loaded
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            progress.load_state_dict(state)
            torch.set_rng_state(state["rng_cpu"])
            log(f"resuming {run_dir} from {path.name} (step {progress.step}/{t.epochs * sampler.steps_per_epoch})")
        if leader:
            truncate_jsonl(run_dir / METRICS_JSONL, progress.step)
    if t.compile:
        backbone = model.backbone
        assert isinstance(backbone, nn.Module)
        backbone.compile(mode=None if t.compile_mode == "default" else t.compile_mode)
    step_fn = None
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        step_fn = DistributedDataParallel(_Steps(model), device_ids=[device.index] if device.type == "cuda" else None)

    _loop(cfg, model, optimizer, sampler, splits, progress, run_dir, device, bf16, step_fn)

    n_views = int(model.n_views)  # type: ignore[arg-type]
    images_per_step = len(sampler(0)[0])
    summary = {
        "step": progress.step,
        "summary": True,
        "final_loss": _final_loss(run_dir) if leader else float("nan"),
        "train_time_s": progress.train_time,
        "views_per_s": progress.step * images_per_step * n_views / max(progress.train_time, 1e-9),
        "peak_memory_mb": peak_memory_mb(device),
        "device": str(device),
        "bf16": bf16,
        "processes": world_size(),
        "n_train": len(splits.train),
        "epochs": t.epochs,
    }
    result = RunResult(run_dir=run_dir, summary=summary)
    if not leader:
        return result
    append_jsonl(run_dir / METRICS_JSONL, summary)
    log(
        f"trained {t.epochs} epochs ({progress.step} steps) in {progress.train_time:.0f} s, "
        f"{summary['views_per_s']:.0f} views/s, final loss {summary['final_loss']:.4f}"
    )
    if t.eval_after:
        from ..eval import evaluate_classifiers, evaluate_run

        if cfg.semi.labels is None:
            result.metrics = evaluate_run(run_dir, model=model, step=progress.step, log=log)
        else:
            result.metrics = evaluate_classifiers(run_dir, model=model, step=progress.step, log=log)
    return result


def _check_distributed(cfg: Config, device: torch.device) -> None:
    """Batch sizes that split evenly over the processes; SyncBatchNorm only on GPUs."""
    w = world_size()
    if cfg.train.sync_bn and device.type != "cuda":
        raise ConfigError("train.sync_bn needs CUDA GPUs (PyTorch's SyncBatchNorm runs on GPUs only)")
    if w == 1:
        return
    if cfg.train.batch_size % w:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} must be a multiple of the {w} processes")
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


def _final_loss(run_dir: Path) -> float:
    records = read_jsonl(run_dir / METRICS_JSONL)
    return next((r["epoch_loss"] for r in reversed(records) if "epoch_loss" in r), float("nan"))


def _loop(
    cfg: Config,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    sampler: StepSampler,
    splits: DataSplits,
    progress: _Progress,
    run_dir: Path,
    device: torch.device,
    bf16: bool,
    step_fn: Callable[[dict[str, Any]], dict[str, torch.Tensor]] | None = None,
) -> None:
    """Train from ``progress.step`` to the end, logging and checkpointing on the way."""
    from tqdm import tqdm

    t = cfg.train
    spe = sampler.steps_per_epoch
    total_steps = t.epochs * spe
    warmup_steps = int(round(cfg.optim.warmup_epochs * spe))
    peak_lr = scaled_lr(cfg.optim, t.batch_size)
    augment = BatchAugment(cfg.augment)
    images = torch.from_numpy(splits.train.images).to(device)  # uint8, resident on the device
    labels = torch.from_numpy(splits.train.labels).to(device)
    leader, part, parts = rank() == 0, rank(), world_size()
    monitor = Monitor(cfg, splits, device) if t.knn_every and leader else None
    n_views = int(model.n_views)  # type: ignore[arg-type]
    metrics_path = run_dir / METRICS_JSONL
    p = progress

    def lr_at(step: int) -> float:
        return peak_lr * lr_factor(step, total_steps, warmup_steps, cfg.optim.schedule)

    def check_finite(value: float) -> None:
        if not math.isfinite(value):
            raise TrainingDivergedError(
                f"loss became {value} by step {p.step} (epoch {(p.step - 1) // spe + 1}, learning rate "
                f"{lr_at(p.step - 1):.4g}); the learning rate (optim.lr={cfg.optim.lr}) is likely too high; "
                f"the last good checkpoint in {run_dir} is kept"
            )

    def save() -> None:
        if not leader:
            return
        state = {
            "format": 1,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "epoch": p.step // spe,
            "total_steps": total_steps,
            "classes": list(splits.train.classes),
            "method": cfg.method.name,
            **p.state_dict(),
        }
        save_checkpoint(run_dir, state, p.step, t.keep_checkpoints)

    board = _tensorboard(run_dir, p.step) if leader else None

    def record(entry: dict[str, Any]) -> None:
        if leader:
            append_jsonl(metrics_path, entry)
        if board is not None:
            epoch_entry = "epoch_loss" in entry
            x = entry["epoch"] if epoch_entry else entry["step"]
            for key, value in entry.items():
                if key not in ("step", "epoch", "train_time_s") and isinstance(value, (int, float)):
                    board.add_scalar(f"{'epoch' if epoch_entry else 'train'}/{key}", value, x)

    bar = tqdm(
        total=total_steps,
        initial=p.step,
        disable=not (t.progress and leader),
        unit="step",
        dynamic_ncols=True,
        desc=f"{cfg.method.name} {cfg.model.backbone}",
        leave=True,
    )
    last_ckpt = time.monotonic()
    interval_start, interval_views = time.perf_counter(), 0
    model.train()
    try:
        with _stop_signals() as stop:
            while p.step < total_steps:
                t0 = time.perf_counter()
                idx_cpu, n_labeled = sampler(p.step)
                total, positions = len(idx_cpu), None
                if parts > 1:  # this rank's share of the global batch
                    positions = local_positions(total, n_labeled, part, parts)
                    idx_cpu, n_labeled = idx_cpu[positions], n_labeled // parts
                idx = idx_cpu.to(device, non_blocking=True)
                batch_labels = labels.index_select(0, idx)
                if n_labeled < len(idx):
                    batch_labels[n_labeled:] = -1  # unlabelled stream: labels hidden
                gen = torch.Generator().manual_seed(step_seed(t.seed, p.step))
                set_lr(optimizer, lr_at(p.step))
                loss = train_step(
                    model,
                    optimizer,
                    augment,
                    images.index_select(0, idx),
                    batch_labels,
                    gen,
                    device,
                    bf16,
                    step=p.step,
                    epoch=p.step / spe,
                    step_fn=step_fn,
                    positions=positions,
                    total=total,
                )
                # Accumulate on the device; reading the loss every step would sync.
                p.loss_sum += loss.float()
                p.epoch_loss_sum += loss.float()
                p.loss_count += 1
                p.step += 1
                interval_views += total * n_views
                end_of_epoch = p.step % spe == 0
                logging_step = p.step % t.log_every == 0 or end_of_epoch
                if logging_step and device.type == "cuda":
                    # Steps are queued, not done, when the host returns: the timed region
                    # of a logging step ends when the device has finished every queued step.
                    torch.cuda.synchronize(device)
                p.train_time += time.perf_counter() - t0
                bar.update(1)
                if logging_step:
                    mean_loss = float(all_reduce_mean(p.loss_sum)) / max(p.loss_count, 1)
                    check_finite(mean_loss)
                    vps = interval_views / max(time.perf_counter() - interval_start, 1e-9)
                    record(
                        {
                            "step": p.step,
                            "epoch": p.step / spe,
                            "loss": mean_loss,
                            "lr": optimizer.param_groups[0]["lr"],
                            "views_per_s": vps,
                            "train_time_s": p.train_time,
                        }
                    )
                    bar.set_postfix(loss=f"{mean_loss:.3f}", views_s=f"{vps:.0f}", refresh=False)
                    p.loss_sum.zero_()
                    p.loss_count = 0
                    interval_start, interval_views = time.perf_counter(), 0
                if end_of_epoch:
                    epoch = p.step // spe
                    epoch_loss = float(all_reduce_mean(p.epoch_loss_sum)) / spe
                    check_finite(epoch_loss)
                    entry: dict[str, Any] = {
                        "step": p.step,
                        "epoch": epoch,
                        "epoch_loss": epoch_loss,
                        "train_time_s": p.train_time,
                    }
                    if monitor is not None and (epoch % t.knn_every == 0 or p.step == total_steps):
                        entry["knn_top1"] = monitor(model.backbone)  # type: ignore[arg-type]
                        bar.write(f"epoch {epoch}: loss {epoch_loss:.4f}, kNN top-1 {entry['knn_top1']:.4f}")
                    record(entry)
                    p.epoch_loss_sum.zero_()
                    interval_start = time.perf_counter()
                # Stopping must be agreed by every rank; they compare notes when they log.
                stopping = any_rank(bool(stop), device) if (parts > 1 and logging_step) else (parts == 1 and bool(stop))
                due = end_of_epoch and ((p.step // spe) % t.checkpoint_every == 0 or p.step == total_steps)
                overdue = t.checkpoint_minutes > 0 and time.monotonic() - last_ckpt > 60 * t.checkpoint_minutes
                if due or overdue or stopping:
                    if not end_of_epoch:
                        check_finite(float(p.loss_sum) + float(p.epoch_loss_sum))
                    save()
                    last_ckpt = time.monotonic()
                    interval_start = time.perf_counter()
                if stopping:
                    raise Interrupted(p.step, run_dir)
    finally:
        bar.close()
        if board is not None:
            board.close()


def _tensorboard(run_dir: Path, step: int) -> Any:
    """A TensorBoard writer for ``run_dir/tensorboard`` (None if tensorboard is missing).

    ``purge_step`` hides events a killed run logged after the checkpoint it resumes from.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=step or None)
