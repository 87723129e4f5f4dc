"""The pretraining loop: data on the device, batch augmentation, checkpoints, resume.

Every random draw of a step (the epoch's data order, the augmentations) is a function
of ``(train.seed, step)``; together with checkpoints that hold the model, optimizer and
loss accumulators, a run killed at any moment and resumed reaches the same weights as
one that never stopped.
"""

from __future__ import annotations

import math
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..augment import BatchAugment, resolve_augment
from ..config import Config, copy_config, diff, save_config
from ..data import DataSplits, channel_stats, class_balanced_indices, load_data
from ..errors import ConfigError, RunDirError, TrainingDivergedError
from ..eval.features import extract_features
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
    default_run_dir,
    load_run_config,
    prepare_run_dir,
    read_jsonl,
    truncate_jsonl,
)

#: Keys that may differ when resuming: they change how a run executes, not what it computes.
RESUME_FREE_KEYS = (
    "train.device",
    "train.precision",
    "train.compile",
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

    def __init__(self, cfg: Config, splits: DataSplits, device: torch.device, bf16: bool) -> None:
        n_bank = min(cfg.eval.monitor_train, len(splits.train))
        n_query = min(cfg.eval.monitor_test, len(splits.test))
        bank = class_balanced_indices(splits.train.labels, n_bank, seed=0)
        query = class_balanced_indices(splits.test.labels, n_query, seed=0)
        self.bank_images = splits.train.images[bank]
        self.bank_labels = torch.from_numpy(splits.train.labels[bank])
        self.query_images = splits.test.images[query]
        self.query_labels = torch.from_numpy(splits.test.labels[query])
        self.num_classes = len(splits.train.classes)
        self.cfg, self.device, self.bf16 = cfg, device, bf16

    def __call__(self, encoder: nn.Module) -> float:
        """Top-1 kNN accuracy (a fraction) of the encoder's features on the fixed subsets."""
        a, e = self.cfg.augment, self.cfg.eval
        assert a.mean is not None and a.std is not None
        kw: dict[str, Any] = dict(
            mean=a.mean,
            std=a.std,
            device=self.device,
            batch_size=e.batch_size,
            bf16=self.bf16,
            channels_last=self.cfg.train.channels_last,
        )
        bank = extract_features(encoder, self.bank_images, **kw)
        query = extract_features(encoder, self.query_images, **kw)
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
) -> torch.Tensor:
    """Augment one batch, run the method's step, update: the body of every training loop.

    Args:
        model: A method (see :mod:`selfsup.methods`).
        optimizer: Its optimizer, learning rate already set for this step.
        augment: The batch augmentation.
        images: uint8 (B, H, W, 3) on ``device``.
        labels: (B,) on ``device``.
        gen: CPU generator for this step's randomness.
        device: The training device.
        bf16: Use bf16 autocast.

    Returns:
        The loss, detached, still on the device (reading it would synchronise).
    """
    views = augment(images, gen, n_views=int(model.n_views))  # type: ignore[arg-type]
    with autocast(device, bf16):
        result = model.training_step({"views": views, "labels": labels, "generator": gen})  # type: ignore[operator]
    loss = result["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    after_step = getattr(model, "after_optimizer_step", None)
    if after_step is not None:
        after_step()
    return loss.detach()


def pretrain(
    cfg: Config,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train ``cfg.method`` and (if ``cfg.train.eval_after``) evaluate the encoder.

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
    device = resolve_device(t.device)
    bf16 = use_bf16(t.precision, device)
    run_dir = Path(out) if out is not None else default_run_dir(cfg.method.name, cfg.model.backbone)

    # Everything that can fail on bad input happens before the run directory is touched.
    method_class(cfg.method.name)
    splits = load_data(cfg.data, seed=t.seed, progress=t.progress)
    cfg = resolve_config(cfg, splits)
    torch.manual_seed(t.seed)
    model = build_method(cfg, len(splits.train.classes))
    n_train = len(splits.train)
    steps_per_epoch = n_train // t.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"train.batch_size {t.batch_size} is larger than the {n_train} training images")

    existing = prepare_run_dir(run_dir, resume, overwrite)
    if existing:
        check_resume_config(load_run_config(run_dir), cfg, run_dir)
    else:
        save_config(cfg, run_dir / CONFIG)

    model.to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optim, t.batch_size)
    total_steps = t.epochs * steps_per_epoch
    warmup_steps = int(round(cfg.optim.warmup_epochs * steps_per_epoch))
    peak_lr = scaled_lr(cfg.optim, t.batch_size)

    step, train_time = 0, 0.0
    loss_sum = torch.zeros((), device=device)
    epoch_loss_sum = torch.zeros((), device=device)
    loss_count = 0
    metrics_path = run_dir / METRICS_JSONL
    if existing:
        # Temporary files of a checkpoint write that a kill interrupted.
        for stale in (run_dir / CHECKPOINTS).glob(".*.tmp"):
            stale.unlink(missing_ok=True)
    loaded = load_latest(run_dir) if existing else None
    if loaded is not None:
        state, path = loaded
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, train_time = int(state["step"]), float(state["train_time_s"])
        loss_sum = state["loss_sum"].to(device)
        epoch_loss_sum = state["epoch_loss_sum"].to(device)
        loss_count = int(state["loss_count"])
        torch.set_rng_state(state["rng_cpu"])
        truncate_jsonl(metrics_path, step)
        log(f"resuming {run_dir} from {path.name} (step {step}/{total_steps})")
    elif existing:
        truncate_jsonl(metrics_path, 0)
    if t.compile:
        backbone = model.backbone
        assert isinstance(backbone, nn.Module)
        backbone.compile()

    augment = BatchAugment(cfg.augment)
    images = torch.from_numpy(splits.train.images).to(device)  # uint8, resident on the device
    labels = torch.from_numpy(splits.train.labels).to(device)
    monitor = Monitor(cfg, splits, device, bf16) if t.knn_every else None
    n_views = int(model.n_views)  # type: ignore[arg-type]

    def checkpoint_state() -> dict[str, Any]:
        return {
            "format": 1,
            "step": step,
            "epoch": step // steps_per_epoch,
            "total_steps": total_steps,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "train_time_s": train_time,
            "loss_sum": loss_sum.cpu(),
            "epoch_loss_sum": epoch_loss_sum.cpu(),
            "loss_count": loss_count,
            "classes": list(splits.train.classes),
            "method": cfg.method.name,
        }

    def check_finite(value: float, where: int) -> None:
        if not math.isfinite(value):
            raise TrainingDivergedError(
                f"loss became {value} by step {where} (epoch {where // steps_per_epoch + 1}, "
                f"learning rate {peak_lr * lr_factor(where - 1, total_steps, warmup_steps, cfg.optim.schedule):.4g}); "
                f"the learning rate (optim.lr={cfg.optim.lr}) is likely too high; the last good checkpoint "
                f"in {run_dir} is kept"
            )

    from tqdm import tqdm

    bar = tqdm(
        total=total_steps,
        initial=step,
        disable=not t.progress,
        unit="step",
        dynamic_ncols=True,
        desc=f"{cfg.method.name} {cfg.model.backbone}",
        leave=True,
    )
    last_ckpt_time = time.monotonic()
    interval_start, interval_steps = time.perf_counter(), 0
    perm: torch.Tensor | None = None
    perm_epoch = -1
    model.train()
    try:
        with _stop_signals() as stop:
            while step < total_steps:
                epoch, i = divmod(step, steps_per_epoch)
                if perm_epoch != epoch:
                    g = torch.Generator().manual_seed(step_seed(t.seed, epoch, stream=1))
                    perm = torch.randperm(n_train, generator=g).to(device)
                    perm_epoch = epoch
                assert perm is not None
                t0 = time.perf_counter()
                idx = perm[i * t.batch_size : (i + 1) * t.batch_size]
                gen = torch.Generator().manual_seed(step_seed(t.seed, step))
                set_lr(optimizer, peak_lr * lr_factor(step, total_steps, warmup_steps, cfg.optim.schedule))
                loss = train_step(
                    model,
                    optimizer,
                    augment,
                    images.index_select(0, idx),
                    labels.index_select(0, idx),
                    gen,
                    device,
                    bf16,
                )
                # Accumulate on the device; reading the loss every step would sync.
                loss_sum += loss.detach().float()
                epoch_loss_sum += loss.detach().float()
                loss_count += 1
                step += 1
                interval_steps += 1
                train_time += time.perf_counter() - t0
                bar.update(1)
                end_of_epoch = step % steps_per_epoch == 0
                if step % t.log_every == 0 or end_of_epoch or step == total_steps:
                    mean_loss = float(loss_sum) / max(loss_count, 1)
                    check_finite(mean_loss, step)
                    elapsed = time.perf_counter() - interval_start
                    vps = interval_steps * t.batch_size * n_views / max(elapsed, 1e-9)
                    lr_now = optimizer.param_groups[0]["lr"]
                    append_jsonl(
                        metrics_path,
                        {
                            "step": step,
                            "epoch": step / steps_per_epoch,
                            "loss": mean_loss,
                            "lr": lr_now,
                            "views_per_s": vps,
                            "train_time_s": train_time,
                        },
                    )
                    bar.set_postfix(loss=f"{mean_loss:.3f}", views_s=f"{vps:.0f}", refresh=False)
                    loss_sum.zero_()
                    loss_count = 0
                    interval_start, interval_steps = time.perf_counter(), 0
                if end_of_epoch:
                    epoch_loss = float(epoch_loss_sum) / steps_per_epoch
                    check_finite(epoch_loss, step)
                    record: dict[str, Any] = {
                        "step": step,
                        "epoch": epoch + 1,
                        "epoch_loss": epoch_loss,
                        "train_time_s": train_time,
                    }
                    if monitor is not None and ((epoch + 1) % t.knn_every == 0 or step == total_steps):
                        record["knn_top1"] = monitor(model.backbone)  # type: ignore[arg-type]
                        bar.write(f"epoch {epoch + 1}: loss {epoch_loss:.4f}, kNN top-1 {record['knn_top1']:.4f}")
                    append_jsonl(metrics_path, record)
                    epoch_loss_sum.zero_()
                    interval_start = time.perf_counter()
                due = end_of_epoch and ((epoch + 1) % t.checkpoint_every == 0 or step == total_steps)
                overdue = t.checkpoint_minutes > 0 and time.monotonic() - last_ckpt_time > 60 * t.checkpoint_minutes
                if due or overdue or stop:
                    if not end_of_epoch:
                        check_finite(float(loss_sum) + float(epoch_loss_sum), step)
                    save_checkpoint(run_dir, checkpoint_state(), step, t.keep_checkpoints)
                    last_ckpt_time = time.monotonic()
                    interval_start = time.perf_counter()
                if stop:
                    raise Interrupted(step, run_dir)
    finally:
        bar.close()

    records = read_jsonl(metrics_path)
    final_loss = next((r["epoch_loss"] for r in reversed(records) if "epoch_loss" in r), float("nan"))
    summary = {
        "step": step,
        "summary": True,
        "final_loss": final_loss,
        "train_time_s": train_time,
        "views_per_s": step * t.batch_size * n_views / max(train_time, 1e-9),
        "peak_memory_mb": peak_memory_mb(device),
        "device": str(device),
        "bf16": bf16,
        "n_train": n_train,
        "epochs": t.epochs,
    }
    append_jsonl(metrics_path, summary)
    log(
        f"trained {t.epochs} epochs ({step} steps) in {train_time:.0f} s, "
        f"{summary['views_per_s']:.0f} views/s, final loss {final_loss:.4f}"
    )
    result = RunResult(run_dir=run_dir, summary=summary)
    if t.eval_after:
        from ..eval import evaluate_run

        result.metrics = evaluate_run(run_dir, model=model, step=step, log=log)
    return result
