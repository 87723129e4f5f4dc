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
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..augment import BatchAugment, resolve_augment
from ..checkpoint import save_checkpoint
from ..config import Config, copy_config
from ..data import DataSplits, channel_stats, class_balanced_indices
from ..distributed import all_reduce_mean, any_rank, rank, world_size
from ..errors import ConfigError, TrainingDivergedError
from ..methods import method_class
from ..optim import lr_factor, scaled_lr, set_lr
from ..rundir import (
    METRICS_JSONL,
    append_jsonl,
)
from ..runtime import autocast, step_seed
from .sampler import StepSampler


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


class Steps(nn.Module):
    """Makes ``training_step`` the forward pass, so DistributedDataParallel can wrap it."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The wrapped method's ``training_step``."""
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


class Progress:
    """Counters carried across steps and checkpoints."""

    def __init__(self, device: torch.device) -> None:
        self.step, self.train_time, self.loss_count = 0, 0.0, 0
        self.loss_sum = torch.zeros((), device=device)
        self.epoch_loss_sum = torch.zeros((), device=device)

    def state_dict(self) -> dict[str, Any]:
        """The counters as a checkpoint holds them (tensors on the CPU)."""
        return {
            "step": self.step,
            "train_time_s": self.train_time,
            "loss_count": self.loss_count,
            "loss_sum": self.loss_sum.cpu(),
            "epoch_loss_sum": self.epoch_loss_sum.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the counters from a checkpoint."""
        self.step, self.train_time = int(state["step"]), float(state["train_time_s"])
        self.loss_count = int(state["loss_count"])
        self.loss_sum.copy_(state["loss_sum"])
        self.epoch_loss_sum.copy_(state["epoch_loss_sum"])


def run_loop(
    cfg: Config,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    sampler: StepSampler,
    splits: DataSplits,
    progress: Progress,
    run_dir: Path,
    device: torch.device,
    bf16: bool,
    step_fn: Callable[[dict[str, Any]], dict[str, torch.Tensor]] | None = None,
    monitor: Callable[[nn.Module], float] | None = None,
) -> None:
    """Train from ``progress.step`` to the end, logging and checkpointing on the way.

    ``monitor`` (rank 0, every ``train.knn_every`` epochs) measures the encoder, e.g. the
    kNN accuracy of :class:`selfsup.eval.monitor.Monitor`.
    """
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

    def save(milestone: bool = False) -> None:
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
        save_checkpoint(run_dir, state, p.step, t.keep_checkpoints, milestone)

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
                # Every epoch ends with a rolling checkpoint; every checkpoint_every-th is kept.
                due = end_of_epoch
                milestone = due and t.checkpoint_every > 0 and (p.step // spe) % t.checkpoint_every == 0
                overdue = t.checkpoint_minutes > 0 and time.monotonic() - last_ckpt > 60 * t.checkpoint_minutes
                if due or overdue or stopping:
                    if not end_of_epoch:
                        check_finite(float(p.loss_sum) + float(p.epoch_loss_sum))
                    save(milestone)
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
