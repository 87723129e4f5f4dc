"""Fine-tuning an encoder with few labels, keeping the epoch with the lowest validation loss.

>>> from selfsup.eval.finetune import finetune
>>> finetune("runs/quick", {"finetune.labels": 1000})["1000"]["test_top1"]

The encoder of a run (or the same architecture at random initialisation, the "from
scratch" reference) gets a new linear head; both are trained with cross-entropy on
``finetune.labels`` class-balanced images with light augmentation. After every epoch the
model is scored on ``finetune.val_size`` held-out images (class-balanced, from the rest of
the training split, used only to choose the epoch); the epoch with the lowest validation
loss is tested on the full test split.

Each label count trains as a run of its own on the training engine
(:mod:`selfsup.train`), in ``OUT/finetune/labels-N/`` (``labels-N-random-init`` from
scratch): its config, checkpoints (which hold the best epoch so far), per-epoch records
and a time-budget plan. So a fine-tuning killed at any moment continues with
``resume=True`` to the weights an uninterrupted one reaches, ``finetune.time_budget``
bounds it in minutes, and the encoder's run is only read, never locked: fine-tunings of
one encoder run side by side.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..augment import resolve_augment
from ..config import (
    AugmentConfig,
    Config,
    MethodConfig,
    OptimConfig,
    SemiConfig,
    apply_section_overrides,
    copy_config,
    save_config,
)
from ..data import DataSplits, class_balanced_indices, load_data
from ..errors import TrainingDivergedError
from ..machine import record_machine
from ..methods.common import load_backbone_weights
from ..methods.supervised import Supervised
from ..models import build_backbone
from ..optim import build_optimizer
from ..rundir import CONFIG, load_run_config, prepare_run_dir, run_lock, update_metrics_json
from ..runtime import resolve_device, set_threads, use_bf16
from ..train.job import Job
from ..train.loop import check_resume_config, fit, resolve_config, start
from ..train.sampler import EpochSampler
from ..train.step import StepContext
from .features import extract_features, feature_options


@dataclass
class _Request:
    """One call of :func:`finetune`, after its arguments are checked."""

    encoder: Path
    dest: Path
    cfg: Config
    random_init: bool
    device: torch.device
    resume: bool
    overwrite: bool
    log: Callable[[str], None]


def finetune(
    run_dir: str | Path,
    overrides: dict[str, Any] | None = None,
    random_init: bool = False,
    device: str | None = None,
    log: Callable[[str], None] = print,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, dict[str, Any]]:
    """Fine-tune a run's encoder (or a random one) with few labels and test it.

    Args:
        run_dir: A run directory with a checkpoint (or any run, with ``random_init``);
            only read.
        overrides: Dotted ``finetune.*`` keys, e.g. ``{"finetune.labels": [300, 1000]}``.
        random_init: Train the same architecture from scratch instead.
        device: Device name (default: the run's ``train.device``).
        log: Where the one-line results go.
        out: Where the results go (created if missing; default ``run_dir``).
        resume: Continue fine-tunings already begun in ``out`` (a fresh start where none is).
        overwrite: Start fine-tunings already in ``out`` over.

    Returns:
        Per number of labels (as a string): ``test_top1`` (fraction, full test split),
        the chosen epoch and its validation loss and accuracy. Also stored in
        ``OUT/metrics.json`` under ``finetune`` (or ``finetune_random_init``), with each
        fine-tuning's run in ``OUT/finetune/labels-N/`` and the machine in ``OUT/machine.json``.

    Raises:
        RunDirError: If ``run_dir`` is not a run, or a fine-tuning in ``out`` exists
            (without ``resume`` or ``overwrite``) or is busy in another process.
    """
    run_dir = Path(run_dir)
    cfg = apply_section_overrides(load_run_config(run_dir), overrides, "finetune", "for fine-tuning")
    set_threads(cfg.train.num_threads)
    dev = resolve_device(device or cfg.train.device)
    request = _Request(run_dir, Path(out) if out is not None else run_dir, cfg,
                       random_init or cfg.finetune.from_scratch, dev, resume, overwrite, log)  # fmt: skip
    splits = load_data(cfg.data, progress=cfg.train.progress, subset=False)
    if cfg.augment.mean is None or cfg.augment.std is None:  # a config never trained (a sweep's cell from scratch)
        request.cfg = resolve_config(cfg, splits)  # the training images' statistics, as pretraining would have set
    results = {}
    section = "finetune_random_init" if request.random_init else "finetune"
    bf16 = use_bf16(cfg.train.precision, dev)
    data = torch.from_numpy(splits.train.images).to(dev), torch.from_numpy(splits.train.labels).to(dev)  # once
    for n_labels in cfg.finetune.labels:
        result = _finetune_one(request, splits, n_labels, data)
        update_metrics_json(request.dest, {str(n_labels): result}, section=section)
        record_machine(request.dest, section, result.get("time_s", 0.0), dev, labels=n_labels, bf16=bf16)
        results[str(n_labels)] = result
    return results


def job_config(cfg: Config, n_labels: int) -> Config:
    """The config of one fine-tuning run: ``finetune.*`` made the engine's ``train``, ``optim`` and ``augment``.

    The learning rate is ``finetune.lr`` without batch scaling or warm-up, decayed by a
    cosine over every step; SGD with Nesterov momentum 0.9, or Adam.
    """
    ft, out = cfg.finetune, copy_config(cfg)
    out.method, out.semi = MethodConfig(name="supervised"), SemiConfig()
    out.finetune = replace(ft, labels=[n_labels])
    out.train = replace(cfg.train, epochs=ft.epochs, time_budget=ft.time_budget, batch_size=ft.batch_size)
    out.train = replace(out.train, seed=ft.seed, low_res=0, knn_every=0, checkpoint_every=0, eval_after=False)
    out.optim = OptimConfig(
        name=ft.optimizer,
        lr=ft.lr,
        lr_scaling="none",
        momentum=0.9,
        nesterov=True,
        weight_decay=ft.weight_decay,
        warmup_epochs=0.0,
        schedule="cosine",
    )
    assert cfg.augment.mean is not None and cfg.augment.std is not None
    out.augment = replace(resolve_augment(AugmentConfig(), ft.preset), mean=cfg.augment.mean, std=cfg.augment.std)
    return out


def _split_labels(cfg: Config, splits: DataSplits, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """The labelled training images and the validation images (disjoint, class-balanced)."""
    ft = cfg.finetune
    labeled = class_balanced_indices(splits.train.labels, n_labels, ft.seed)
    rest = np.setdiff1d(np.arange(len(splits.train)), labeled)
    val = rest[class_balanced_indices(splits.train.labels[rest], min(ft.val_size, len(rest)), ft.seed + 1)]
    return labeled, val


def _build(request: _Request, cfg: Config, num_classes: int) -> tuple[Supervised, torch.optim.Optimizer]:
    """The encoder (pretrained or random) with a new linear head, and its optimizer (``cfg``: the job's)."""
    ft = cfg.finetune
    torch.manual_seed(ft.seed)
    backbone = build_backbone(cfg.model.backbone, cfg.model.width, cfg.model.stem)
    if not request.random_init:
        load_backbone_weights(backbone, request.encoder)
    head_only = float("inf") if ft.freeze_encoder else float(ft.head_epochs)
    model = Supervised(backbone, num_classes, frozen_epochs=head_only).to(request.device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    lr_mult = {"backbone.": ft.encoder_lr} if ft.encoder_lr != 1.0 else None
    return model, build_optimizer(model, cfg.optim, ft.batch_size, lr_mult)


class Validation:
    """The engine's monitor for fine-tuning: validation loss and accuracy every epoch, the best epoch kept.

    Args:
        images: uint8 (N, H, W, 3) validation images.
        labels: (N,) their labels, on the training device.
        options: :func:`~selfsup.eval.features.feature_options` of the run.
    """

    every = 1

    def __init__(self, images: np.ndarray, labels: torch.Tensor, options: dict[str, Any]) -> None:
        self.images, self.labels, self.options = images, labels, options
        self.best: dict[str, Any] = {"val_loss": float("inf")}

    def __call__(self, model: torch.nn.Module, epoch: float) -> dict[str, float]:
        """``{"val_loss", "val_top1"}`` of ``model`` now; keeps its weights if the loss is the lowest yet."""
        logits = extract_features(model, self.images, **self.options)
        val_loss = float(F.cross_entropy(logits, self.labels))
        val_top1 = float((logits.argmax(1) == self.labels).float().mean())
        if val_loss < self.best["val_loss"]:
            state = copy.deepcopy(model.state_dict())
            self.best = {"val_loss": val_loss, "val_top1": val_top1, "epoch": round(epoch), "state": state}
        return {"val_loss": val_loss, "val_top1": val_top1}

    def state_dict(self) -> dict[str, Any]:
        """The best epoch so far, with its weights (saved in every checkpoint)."""
        return self.best

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the best epoch from a checkpoint."""
        self.best = state


def _job(request: _Request, splits: DataSplits, n_labels: int, data: tuple[torch.Tensor, torch.Tensor],
         run_dir: Path) -> Job:  # fmt: skip
    """The engine's job for one label count: the model, the labelled images' sampler, the validation.

    ``data`` is the training split's images and labels, already on the device.
    """
    cfg = job_config(request.cfg, n_labels)
    labeled, val = _split_labels(cfg, splits, n_labels)
    model, opt = _build(request, cfg, len(splits.train.classes))
    dev = request.device
    sampler = EpochSampler(labeled, cfg.train.batch_size, cfg.train.seed)
    ctx = StepContext(dev, use_bf16(cfg.train.precision, dev))
    val_labels = torch.from_numpy(splits.train.labels[val]).to(dev)
    monitor = Validation(splits.train.images[val], val_labels, feature_options(cfg, dev))
    return Job(cfg, model, opt, sampler, data, run_dir, ctx, {"method": "finetune"}, monitor, lr_key="finetune.lr")


def run_name(n_labels: int, random_init: bool) -> str:
    """The folder of one fine-tuning under ``OUT/finetune/``."""
    return f"labels-{n_labels}" + ("-random-init" if random_init else "")


def _finetune_one(
    request: _Request, splits: DataSplits, n_labels: int, data: tuple[torch.Tensor, torch.Tensor]
) -> dict[str, Any]:
    """Fine-tune with ``n_labels`` labels in its own run directory, test the best epoch."""
    run_dir = request.dest / "finetune" / run_name(n_labels, request.random_init)
    t0 = time.perf_counter()
    with run_lock(run_dir, "selfsup finetune"):
        existing = prepare_run_dir(run_dir, request.resume, request.overwrite)
        job = _job(request, splits, n_labels, data, run_dir)
        if existing:
            check_resume_config(load_run_config(run_dir), job.cfg, run_dir)
        else:
            save_config(job.cfg, run_dir / CONFIG)
        start(job, existing, request.log)
        fit(job)
    assert isinstance(job.monitor, Validation)
    best = dict(job.monitor.best)
    if "state" not in best:  # every validation loss was NaN (or infinite)
        raise TrainingDivergedError(
            f"fine-tuning with {n_labels} labels diverged: no finite validation loss in any epoch; "
            f"lower finetune.lr (now {request.cfg.finetune.lr})"
        )
    job.model.load_state_dict(best.pop("state"))
    result = _test(job, splits, best, request, time.perf_counter() - t0)
    return result if request.random_init else {**result, "encoder": str(request.encoder)}


def _test(job: Job, splits: DataSplits, best: dict[str, Any], request: _Request, seconds: float) -> dict[str, Any]:
    """Test accuracy of the chosen epoch, with what led to it."""
    ft = job.cfg.finetune
    n_labels = ft.labels[0]
    logits = extract_features(job.model, splits.test.images, **feature_options(job.cfg, request.device))
    test_top1 = float((logits.argmax(1).cpu() == torch.from_numpy(splits.test.labels)).float().mean())
    init = "random" if request.random_init else "pretrained"
    result = {
        "test_top1": test_top1,
        "labels": n_labels,
        "best_epoch": best["epoch"],
        "val_loss": best["val_loss"],
        "val_top1": best["val_top1"],
        "epochs": ft.epochs,
        "steps": job.state.step,
        "val_size": min(ft.val_size, len(splits.train) - n_labels),
        "n_test": len(splits.test),
        "init": init,
        "freeze_encoder": ft.freeze_encoder,
        "time_s": seconds,
        # Every fine-tuning setting with the result: a fine-tuning written elsewhere (--out)
        # has no config.yaml of its own, and trials differ in exactly these.
        "settings": {k: v for k, v in asdict(ft).items() if k != "labels"},
    }
    request.log(
        f"fine-tuned ({init} encoder, {n_labels} labels): test top-1 {test_top1:.4f} "
        f"(best epoch {best['epoch']}/{ft.epochs}, val loss {best['val_loss']:.4f})"
    )
    return result
