"""The training loop: data on the device, per-view batch augmentation, checkpoints, resume.

One loop serves every method: self-supervised pretraining (all images, labels unused),
supervised training, and semi-supervised training with ``semi.labels`` (a labelled
stream beside the unlabelled one, see :mod:`selfsup.train.sampler`). A step is
:func:`selfsup.train.step.train_step`; what a checkpoint holds is a
:class:`~selfsup.train.state.TrainState`; where numbers go is a
:class:`~selfsup.train.recorder.Recorder`; which images a step takes is :func:`next_batch`.

Every random draw of a step (the batch, the augmentations, MoCo's shuffle) is a function
of ``(train.seed, step)``; together with checkpoints that hold the model (with its EMA
copies and queues), the optimizer and the counters, a run killed at any moment and
resumed reaches the same weights as one that never stopped.
"""

from __future__ import annotations

import math
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..augment import ViewAugment, resolve_augment, view_configs
from ..checkpoint import save_checkpoint
from ..config import Config, copy_config
from ..data import DataSplits, channel_stats, class_balanced_indices
from ..distributed import all_reduce_mean, any_rank, broadcast_object, rank, world_size
from ..errors import ConfigError, TrainingDivergedError
from ..methods import Method, method_class
from ..optim import lr_factor, scaled_lr, set_lr
from ..runtime import step_seed, to_device
from .plan import REPLAN_TOLERANCE, REPLANS_PER_RUN, record_replan, replan_total, wall_minutes
from .recorder import Recorder
from .sampler import StepSampler
from .state import TrainState
from .step import StepFn, train_step


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved."""

    def __init__(self, step: int, run_dir: Path) -> None:
        super().__init__(f"interrupted at step {step}; checkpoint saved, continue with --resume --out {run_dir}")
        self.step = step


def resolve_config(cfg: Config, splits: DataSplits) -> Config:
    """Fill what depends on the method and the data: augmentation preset values, mean/std."""
    spec = method_class(cfg.method.name)
    out = copy_config(cfg)
    out.augment = resolve_augment(cfg.augment, spec.default_augment)
    if out.augment.mean is None or out.augment.std is None:
        mean, std = channel_stats(splits.train.images)
        out.augment = replace(out.augment, mean=out.augment.mean or mean, std=out.augment.std or std)
    return out


def view_augment(cfg: Config, method: Method, compile: bool | None = None) -> ViewAugment:
    """The method's views: the run's augmentation with each view's own changes.

    ``compile`` (default ``train.compile``) compiles the augmentation as well as the
    model, on a GPU (see :class:`~selfsup.augment.BatchAugment`).
    """
    compile = cfg.train.compile if compile is None else compile
    return ViewAugment(view_configs(cfg.augment, method.view_augment, method.n_views), compile=compile)


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
    if spec.semi_supervised and s.labels is None:
        raise ConfigError(
            f"method {cfg.method.name!r} learns from few labels: run "
            f"'selfsup semi --method {cfg.method.name} --labels N' (semi.labels)"
        )
    if n_train // t.batch_size == 0:
        raise ConfigError(f"train.batch_size {t.batch_size} is larger than the {n_train} training images")
    if s.labels is None:
        return StepSampler(n_train, t.batch_size, t.seed)
    if not spec.uses_labels:
        raise ConfigError(f"semi.labels is set but method {cfg.method.name!r} does not use labels")
    labeled = class_balanced_indices(splits.train.labels, s.labels, t.seed)
    return StepSampler(
        n_train,
        t.batch_size,
        t.seed,
        labeled,
        s.labeled_batch_size,
        use_main=spec.semi_supervised,
    )


@dataclass
class StepImages:
    """This process's images of one step, on the device, and where they sit in the global batch."""

    images: torch.Tensor
    labels: torch.Tensor
    positions: torch.Tensor | None
    total: int
    truth: torch.Tensor


def next_batch(sampler: StepSampler, step: int, images: torch.Tensor, labels: torch.Tensor) -> StepImages:
    """The images of ``step`` (this rank's share under torchrun); unlabelled ones get label -1."""
    idx_cpu, n_labeled = sampler(step)
    total, positions, parts = len(idx_cpu), None, world_size()
    if parts > 1:  # this rank's share of the global batch
        positions = local_positions(total, n_labeled, rank(), parts)
        idx_cpu, n_labeled = idx_cpu[positions], n_labeled // parts
    idx = to_device(idx_cpu, images.device)
    truth = batch_labels = labels.index_select(0, idx)
    if n_labeled < len(idx):
        batch_labels = truth.clone()  # the truth stays for health signals only
        batch_labels[n_labeled:] = -1  # unlabelled stream: labels hidden
    return StepImages(images.index_select(0, idx), batch_labels, positions, total, truth)


class _Loop:
    """The parts of one training run the loop needs, and what it does between steps."""

    def __init__(
        self,
        cfg: Config,
        model: Method,
        optimizer: torch.optim.Optimizer,
        sampler: StepSampler,
        state: TrainState,
        run_dir: Path,
        extra: dict[str, Any],
        step_fn: StepFn | None,
        monitor: Callable[[nn.Module], float] | None,
        total: int,
    ) -> None:
        t = cfg.train
        self.cfg, self.model, self.optimizer, self.sampler, self.state = cfg, model, optimizer, sampler, state
        self.run_dir, self.extra, self.step_fn, self.monitor = run_dir, extra, step_fn, monitor
        self.spe = sampler.steps_per_epoch
        self.total = total
        self.warmup = int(round(cfg.optim.warmup_epochs * self.spe))
        self.peak_lr = scaled_lr(cfg.optim, t.batch_size)
        self.augment = view_augment(cfg, model)
        self.leader = rank() == 0
        self.recorder = Recorder(
            run_dir, state.step, self.total, f"{cfg.method.name} {cfg.model.backbone}", self.leader, t.progress
        )
        self.last_checkpoint = time.monotonic()
        self.interval_start, self.interval_views = time.perf_counter(), 0
        self.final_loss: float | None = None
        # A time budget is re-planned every replan_every steps (a multiple of log_every,
        # where the step time is exact on a GPU too), from the pace since the last look.
        minutes = wall_minutes(t.time_budget, t.budget_scale)
        self.budget_s = 60 * minutes if (minutes is not None and t.replan) else None
        looks = max(t.log_every, total // REPLANS_PER_RUN // t.log_every * t.log_every)
        self.replan_every = looks
        self.looked_at = (state.step, state.train_time)

    def overdue(self) -> bool:
        """Whether ``train.checkpoint_minutes`` have passed since the last checkpoint."""
        minutes = self.cfg.train.checkpoint_minutes
        return minutes > 0 and time.monotonic() - self.last_checkpoint > 60 * minutes

    def replan(self) -> bool:
        """Move the end of a time-budgeted run to where the budget ends at the recent pace.

        Every rank follows rank 0's new total. Returns whether the total moved (by more
        than :data:`~selfsup.train.plan.REPLAN_TOLERANCE`); then it is recorded in
        ``plan.json`` and the caller saves a checkpoint, which holds it for ``--resume``.
        """
        s = self.state
        if self.budget_s is None or s.step % self.replan_every or s.step == self.looked_at[0]:
            return False
        pace = (s.train_time - self.looked_at[1]) / (s.step - self.looked_at[0])
        self.looked_at = (s.step, s.train_time)
        total = int(broadcast_object(replan_total(s.step, s.train_time, self.budget_s, pace)))
        if abs(total - self.total) <= max(1, REPLAN_TOLERANCE * self.total):
            return False
        before, self.total = self.total, total
        self.recorder.set_total(total)
        if self.leader:
            entry = {"step": s.step, "total_steps": total, "seconds_per_step": pace, "train_time_s": s.train_time}
            record_replan(self.run_dir, entry)
            self.recorder.write(
                f"time budget: {pace:.3f} s per step lately; the run now ends at step {total} (was {before})"
            )
        return True

    def lr_at(self, step: int) -> float:
        """The learning rate of ``step`` (warm-up, then the schedule)."""
        return self.peak_lr * lr_factor(step, self.total, self.warmup, self.cfg.optim.schedule)

    def view_size(self, step: int) -> int | None:
        """The views' side at ``step``: ``train.low_res`` early in the run, else the images'."""
        t = self.cfg.train
        return t.low_res if t.low_res and step < t.low_res_until * self.total else None

    def step(self, images: torch.Tensor, labels: torch.Tensor, device: torch.device, bf16: bool) -> None:
        """One training step, its scalars accumulated on the device."""
        s = self.state
        batch = next_batch(self.sampler, s.step, images, labels)
        gen = torch.Generator().manual_seed(step_seed(self.cfg.train.seed, s.step))
        set_lr(self.optimizer, self.lr_at(s.step))
        scalars = train_step(
            self.model, self.optimizer, self.augment, batch.images, batch.labels, gen, device, bf16,
            step=s.step, epoch=s.step / self.spe, progress=s.step / self.total, step_fn=self.step_fn,
            positions=batch.positions, total=batch.total, truth=batch.truth, size=self.view_size(s.step),
        )  # fmt: skip
        s.add(scalars)
        s.step += 1
        self.interval_views += batch.total * self.model.n_views

    def check_finite(self, value: float) -> None:
        """Stop the run, naming the step and the likely cause, on a NaN or infinite loss."""
        if not math.isfinite(value):
            s = self.state
            raise TrainingDivergedError(
                f"loss became {value} by step {s.step} (epoch {(s.step - 1) // self.spe + 1}, learning rate "
                f"{self.lr_at(s.step - 1):.4g}); the learning rate (optim.lr={self.cfg.optim.lr}) is likely too "
                f"high; the last good checkpoint in {self.run_dir} is kept"
            )

    def log_interval(self) -> None:
        """Means of every scalar since the last log (one read-back from the device)."""
        s = self.state
        names = list(s.interval)
        means = (all_reduce_mean(torch.stack([s.interval[n] for n in names])) / max(s.count, 1)).tolist()
        values = dict(zip(names, means))
        self.check_finite(values["loss"])
        vps = self.interval_views / max(time.perf_counter() - self.interval_start, 1e-9)
        lr = self.optimizer.param_groups[0]["lr"]
        entry = {"step": s.step, "epoch": s.step / self.spe, "loss": values.pop("loss"), "lr": lr, "views_per_s": vps}
        self.recorder.record({**entry, **values, "train_time_s": s.train_time})
        self.recorder.show(loss=f"{entry['loss']:.3f}", views_s=f"{vps:.0f}")
        s.interval, s.count = {}, 0
        self.interval_start, self.interval_views = time.perf_counter(), 0

    def log_epoch(self) -> None:
        """The epoch's mean of every scalar, and the kNN monitor when it is due.

        A time-budgeted run may end inside an epoch: that last, partial epoch is logged
        too (``epoch`` fractional, means over its steps).
        """
        s = self.state
        steps = (s.step - 1) % self.spe + 1  # steps of this epoch
        epoch: float = s.step // self.spe if steps == self.spe else s.step / self.spe
        names = list(s.epoch)
        means = dict(zip(names, (all_reduce_mean(torch.stack([s.epoch[n] for n in names])) / steps).tolist()))
        self.check_finite(means["loss"])
        self.final_loss = means["loss"]
        entry: dict[str, Any] = {"step": s.step, "epoch": epoch, "epoch_loss": means.pop("loss")}
        entry.update({f"epoch_{n}": v for n, v in means.items()})
        entry["train_time_s"] = s.train_time
        due = isinstance(epoch, int) and epoch % max(self.cfg.train.knn_every, 1) == 0
        if self.monitor is not None and (due or s.step == self.total):
            entry["knn_top1"] = self.monitor(self.model.backbone)
            self.recorder.write(f"epoch {epoch}: loss {entry['epoch_loss']:.4f}, kNN top-1 {entry['knn_top1']:.4f}")
        self.recorder.record(entry)
        s.epoch = {}
        self.interval_start = time.perf_counter()

    def save(self, milestone: bool) -> None:
        """A checkpoint (rank 0); a non-finite loss since the last log stops the run first."""
        s = self.state
        if s.interval:
            self.check_finite(float(s.interval["loss"]) + float(s.epoch.get("loss", torch.zeros(()))))
        if self.leader:
            state = s.checkpoint(self.model, self.optimizer, epoch=s.step // self.spe, total_steps=self.total,
                                 **self.extra)  # fmt: skip
            save_checkpoint(self.run_dir, state, s.step, self.cfg.train.keep_checkpoints, milestone)
        self.last_checkpoint = time.monotonic()
        self.interval_start = time.perf_counter()


def run_loop(
    cfg: Config,
    model: Method,
    optimizer: torch.optim.Optimizer,
    sampler: StepSampler,
    data: tuple[torch.Tensor, torch.Tensor],
    state: TrainState,
    run_dir: Path,
    bf16: bool,
    extra: dict[str, Any],
    step_fn: StepFn | None = None,
    monitor: Callable[[nn.Module], float] | None = None,
    total: int | None = None,
) -> float | None:
    """Train from ``state.step`` to the end, logging and checkpointing on the way.

    Args:
        cfg: The resolved config.
        model: The method, on the device.
        optimizer: Its optimizer.
        sampler: Which images each step takes.
        data: uint8 images (N, H, W, 3) and labels (N,), resident on the device.
        state: The counters (restored from a checkpoint when resuming).
        run_dir: Where checkpoints and metrics go (rank 0).
        bf16: bf16 autocast.
        extra: More entries for every checkpoint (classes, method name).
        step_fn: Computes the losses (DistributedDataParallel under torchrun).
        monitor: Measures the encoder every ``train.knn_every`` epochs (rank 0).
        total: Steps of the whole run (default ``train.epochs`` epochs; a time budget's plan).

    Returns:
        The last epoch's mean loss (None if no epoch ended here).
    """
    t, (images, labels) = cfg.train, data
    total = total if total is not None else t.epochs * sampler.steps_per_epoch
    loop = _Loop(cfg, model, optimizer, sampler, state, run_dir, extra, step_fn, monitor, total)
    multi = world_size() > 1
    model.train()
    try:
        with _stop_signals() as stop:
            while state.step < loop.total:
                t0 = time.perf_counter()
                loop.step(images, labels, images.device, bf16)
                logging = state.step % t.log_every == 0 or state.step % loop.spe == 0 or state.step == loop.total
                if logging and images.device.type == "cuda":
                    # Steps are queued, not done, when the host returns: the timed region
                    # of a logging step ends when the device has finished every queued step.
                    torch.cuda.synchronize(images.device)
                state.train_time += time.perf_counter() - t0
                loop.recorder.advance()
                replanned = logging and loop.replan()  # may move loop.total, even to this step
                end_of_epoch = state.step % loop.spe == 0 or state.step == loop.total
                logging = logging or end_of_epoch
                if logging:
                    loop.log_interval()
                if end_of_epoch:
                    loop.log_epoch()
                # Stopping must be agreed by every rank; they compare notes when they log.
                stopping = any_rank(bool(stop), images.device) if (multi and logging) else (not multi and bool(stop))
                if end_of_epoch or loop.overdue() or stopping or replanned:  # every epoch ends with one
                    whole, epoch = state.step % loop.spe == 0, state.step // loop.spe
                    loop.save(whole and t.checkpoint_every > 0 and epoch % t.checkpoint_every == 0)
                if stopping:
                    raise Interrupted(state.step, run_dir)
    finally:
        loop.recorder.close()
    return loop.final_loss
