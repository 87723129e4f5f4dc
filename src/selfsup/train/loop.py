"""The training engine: data on the device, per-view batch augmentation, checkpoints, resume.

One engine serves every stage: self-supervised pretraining (all images, labels unused),
supervised training, semi-supervised training with ``semi.labels`` (a labelled stream
beside the unlabelled one, see :mod:`selfsup.train.sampler`), fine-tuning an encoder
with few labels, and the time-budget plan, which times the same step. What a run needs
is one :class:`Job`; :func:`start` plans its length and restores a checkpoint,
:func:`fit` trains it. A step is :func:`selfsup.train.step.train_step` on the one
:class:`~selfsup.methods.base.Batch` record that :func:`next_batch` fills; what a
checkpoint holds is a :class:`~selfsup.train.state.TrainState`; where numbers go is a
:class:`~selfsup.train.recorder.Recorder`.

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
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..augment import resolve_augment
from ..checkpoint import load_latest, save_checkpoint
from ..config import Config, copy_config, diff, resume_free_keys
from ..data import DataSplits, channel_stats, class_balanced_indices
from ..distributed import all_reduce_mean, any_rank, broadcast_object, rank, world_size
from ..errors import ConfigError, RunDirError, TrainingDivergedError
from ..methods import method_class, resolve_method
from ..optim import lr_factor, scaled_lr, set_lr
from ..rundir import METRICS_JSONL, truncate_jsonl
from ..runtime import step_seed
from .job import Job, view_augment
from .plan import REPLAN_TOLERANCE, REPLANS_PER_RUN, budget_total, record_replan, replan_total, wall_minutes
from .recorder import Recorder
from .sampler import StepSampler, next_batch
from .step import train_step

__all__ = [
    "Interrupted",
    "Job",
    "build_sampler",
    "check_resume_config",
    "fit",
    "next_batch",
    "resolve_config",
    "start",
    "view_augment",
]


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved."""

    def __init__(self, step: int, run_dir: Path) -> None:
        super().__init__(f"interrupted at step {step}; checkpoint saved, continue with --resume --out {run_dir}")
        self.step = step


def resolve_config(cfg: Config, splits: DataSplits) -> Config:
    """Fill what depends on the method and the data: its settings, augmentation preset values, mean/std."""
    spec = method_class(cfg.method.name)
    out = copy_config(resolve_method(cfg))
    out.augment = resolve_augment(cfg.augment, spec.default_augment)
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


class _Engine:
    """A :class:`Job` in progress, and what the engine does between its steps."""

    def __init__(self, job: Job) -> None:
        cfg, t, state = job.cfg, job.cfg.train, job.state
        self.job, self.cfg, self.model, self.optimizer, self.state = job, cfg, job.model, job.optimizer, state
        self.spe = job.sampler.steps_per_epoch
        self.total = job.total if job.total is not None else t.epochs * self.spe
        self.warmup = int(round(cfg.optim.warmup_epochs * self.spe))
        self.peak_lr = scaled_lr(cfg.optim, t.batch_size)
        self.augment = view_augment(cfg, job.model)
        self.leader = rank() == 0
        name = f"{cfg.method.name} {cfg.model.backbone}"
        self.recorder = Recorder(job.run_dir, state.step, self.total, name, self.leader, t.progress)
        self.last_checkpoint = time.monotonic()
        self.interval_start, self.interval_views = time.perf_counter(), 0
        self.final_loss: float | None = None
        # A time budget is re-planned every replan_every steps (a multiple of log_every,
        # where the step time is exact on a GPU too), from the pace since the last look.
        minutes = wall_minutes(t.time_budget, t.budget_scale)
        self.budget_s = 60 * minutes if (minutes is not None and t.replan) else None
        self.replan_every = max(t.log_every, self.total // REPLANS_PER_RUN // t.log_every * t.log_every)
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
            record_replan(self.job.run_dir, entry)
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

    def step(self) -> None:
        """One training step, its scalars accumulated on the device."""
        s, job = self.state, self.job
        gen = torch.Generator().manual_seed(step_seed(self.cfg.train.seed, s.step))
        batch = next_batch(job.sampler, s.step, job.data, gen)
        batch.epoch, batch.progress, batch.size = s.step / self.spe, s.step / self.total, self.view_size(s.step)
        set_lr(self.optimizer, self.lr_at(s.step))
        s.add(train_step(self.model, self.optimizer, self.augment, batch, job.ctx))
        s.step += 1
        self.interval_views += (batch.total or len(batch.labels)) * self.model.n_views

    def check_finite(self, value: float) -> None:
        """Stop the run, naming the step and the likely cause, on a NaN or infinite loss."""
        if not math.isfinite(value):
            s = self.state
            raise TrainingDivergedError(
                f"loss became {value} by step {s.step} (epoch {(s.step - 1) // self.spe + 1}, learning rate "
                f"{self.lr_at(s.step - 1):.4g}); the learning rate ({self.job.lr_key}={self.cfg.optim.lr}) is "
                f"likely too high; the last good checkpoint in {self.job.run_dir} is kept"
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
        monitor = self.job.monitor
        due = monitor is not None and isinstance(epoch, int) and epoch % max(monitor.every, 1) == 0
        if monitor is not None and (due or s.step == self.total):
            measured = monitor(self.model, epoch)
            self.model.train()
            entry.update(measured)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in measured.items())
            self.recorder.write(f"epoch {epoch:g}: loss {entry['epoch_loss']:.4f}, {shown}")
        self.recorder.record(entry)
        s.epoch = {}
        self.interval_start = time.perf_counter()

    def save(self, milestone: bool) -> None:
        """A checkpoint (rank 0); a non-finite loss since the last log stops the run first."""
        s = self.state
        if s.interval:
            self.check_finite(float(s.interval["loss"]) + float(s.epoch.get("loss", torch.zeros(()))))
        if self.leader:
            extra = dict(self.job.extra)
            if hasattr(self.job.monitor, "state_dict"):
                extra["monitor"] = self.job.monitor.state_dict()  # type: ignore[union-attr]
            state = s.checkpoint(self.model, self.optimizer, epoch=s.step // self.spe, total_steps=self.total, **extra)
            save_checkpoint(self.job.run_dir, state, s.step, self.cfg.train.keep_checkpoints, milestone)
        self.last_checkpoint = time.monotonic()
        self.interval_start = time.perf_counter()


def start(job: Job, existing: bool, log: Callable[[str], None]) -> None:
    """Set ``job.total`` (epochs, or the steps a time budget allows) and restore the newest checkpoint.

    Args:
        job: The run; its state, model, optimizer and monitor are restored in place.
        existing: The run directory holds a run to continue.
        log: Where the plan and the resumed step are said.
    """
    t = job.cfg.train
    total = t.epochs * job.sampler.steps_per_epoch
    if t.time_budget is not None:
        total = budget_total(job, log)
    if existing:
        saved_total = _restore(job, total, log)
        if t.time_budget is not None and saved_total:  # a re-planned budget: the total the checkpoint ran to
            total = saved_total
    job.total = total


def _restore(job: Job, total: int, log: Callable[[str], None]) -> int | None:
    """Load the newest checkpoint into the job; drop records written after it.

    Returns:
        The total steps the checkpoint's run was heading for (None without a checkpoint).
    """
    loaded = load_latest(job.run_dir)
    saved_total = None
    if loaded is not None:
        checkpoint, path = loaded
        job.state.restore(checkpoint, job.model, job.optimizer)
        if "monitor" in checkpoint and hasattr(job.monitor, "load_state_dict"):
            job.monitor.load_state_dict(checkpoint["monitor"])  # type: ignore[union-attr]
        saved_total = checkpoint.get("total_steps")
        log(f"resuming {job.run_dir} from {path.name} (step {job.state.step}/{saved_total or total})")
    if rank() == 0:
        truncate_jsonl(job.run_dir / METRICS_JSONL, job.state.step)
    return int(saved_total) if saved_total else None


def fit(job: Job) -> float | None:
    """Train ``job`` from its state's step to ``job.total``, logging and checkpointing on the way.

    Returns:
        The last epoch's mean loss (None if no epoch ended here).

    Raises:
        Interrupted: After a SIGINT or SIGTERM, with a checkpoint saved.
    """
    engine, state = _Engine(job), job.state
    job.model.train()
    try:
        with _stop_signals() as stop:
            while state.step < engine.total:
                _one_step(engine, stop)
    finally:
        engine.recorder.close()
    return engine.final_loss


def _one_step(engine: _Engine, stop: dict[str, int]) -> None:
    """A step and what follows it: timing, logs, the monitor, re-planning, checkpoints, stopping."""
    state, t, device = engine.state, engine.cfg.train, engine.job.ctx.device
    t0 = time.perf_counter()
    engine.step()
    logging = state.step % t.log_every == 0 or state.step % engine.spe == 0 or state.step == engine.total
    if logging and device.type == "cuda":
        # Steps are queued, not done, when the host returns: the timed region of a
        # logging step ends when the device has finished every queued step.
        torch.cuda.synchronize(device)
    state.train_time += time.perf_counter() - t0
    engine.recorder.advance()
    replanned = logging and engine.replan()  # may move engine.total, even to this step
    end_of_epoch = state.step % engine.spe == 0 or state.step == engine.total
    logging = logging or end_of_epoch
    if logging:
        engine.log_interval()
    if end_of_epoch:
        engine.log_epoch()
    # Stopping must be agreed by every rank; they compare notes when they log.
    multi = world_size() > 1
    stopping = any_rank(bool(stop), device) if (multi and logging) else (not multi and bool(stop))
    if end_of_epoch or engine.overdue() or stopping or replanned:  # every epoch ends with one
        whole, epoch = state.step % engine.spe == 0, state.step // engine.spe
        engine.save(whole and t.checkpoint_every > 0 and epoch % t.checkpoint_every == 0)
    if stopping:
        raise Interrupted(state.step, engine.job.run_dir)


def check_resume_config(saved: Config, new: Config, run_dir: Path) -> None:
    """Refuse to resume with settings that would change what the run computes.

    Both configs are compared with their method sections resolved: a run saved when every
    method's keys were saved together resumes under the method's own settings.
    """
    free = resume_free_keys()
    changed = {k: v for k, v in diff(resolve_method(saved), resolve_method(new)).items() if k not in free}
    if changed:
        key, (old, now) = next(iter(changed.items()))
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise RunDirError(
            f"cannot resume {run_dir}: {key} was {old!r} and is now {now!r}{more}; "
            f"resume with the saved settings or start a new run"
        )
