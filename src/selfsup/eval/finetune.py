"""Fine-tuning an encoder with few labels, keeping the epoch with the lowest validation loss.

>>> from selfsup.eval.finetune import finetune
>>> finetune("runs/quick", {"finetune.labels": 1000})["1000"]["test_top1"]

The encoder of a run (or the same architecture at random initialisation, the "from
scratch" reference) gets a new linear head; both are trained with cross-entropy on
``finetune.labels`` class-balanced images with light augmentation. After every epoch the
model is scored on ``finetune.val_size`` held-out images (class-balanced, from the rest of
the training split, used only to choose the epoch); the epoch with the lowest validation
loss is tested on the full test split.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..augment import ViewAugment, resolve_augment
from ..config import AugmentConfig, Config, OptimConfig, apply_section_overrides
from ..data import DataSplits, class_balanced_indices, load_data
from ..errors import TrainingDivergedError
from ..machine import record_machine
from ..methods.common import load_backbone_weights
from ..methods.supervised import Supervised
from ..models import build_backbone
from ..optim import build_optimizer, lr_factor, set_lr
from ..rundir import append_jsonl, existing_run_lock, load_run_config, run_lock, update_metrics_json
from ..runtime import resolve_device, set_threads, step_seed, to_device, use_bf16
from ..train.step import train_step
from .features import extract_features, feature_options


def finetune(
    run_dir: str | Path,
    overrides: dict[str, Any] | None = None,
    random_init: bool = False,
    device: str | None = None,
    log: Callable[[str], None] = print,
    out: str | Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Fine-tune a run's encoder (or a random one) with few labels and test it.

    Args:
        run_dir: A run directory with a checkpoint (or any run, with ``random_init``).
        overrides: Dotted ``finetune.*`` keys, e.g. ``{"finetune.labels": [300, 1000]}``.
        random_init: Train the same architecture from scratch instead.
        device: Device name (default: the run's ``train.device``).
        log: Where the one-line results go.
        out: Where the results go (created if missing; default ``run_dir``). With it,
            the encoder's run is only read: several fine-tunings of one encoder (a
            sweep's cells with the same label count) keep their own records and may
            run at the same time.

    Returns:
        Per number of labels (as a string): ``test_top1`` (fraction, full test split),
        the chosen epoch and its validation loss and accuracy. Also stored in
        ``OUT/metrics.json`` under ``finetune`` (or ``finetune_random_init``), with
        per-epoch records in ``OUT/finetune/`` and the machine in ``OUT/machine.json``.

    Raises:
        RunDirError: If ``run_dir`` is not a run, or another process writes to ``out``.
    """
    run_dir = Path(run_dir)
    dest = run_dir if out is None else Path(out)
    if out is None:
        lock = existing_run_lock(run_dir, "selfsup finetune")
    else:
        load_run_config(run_dir)  # a clear error before anything is created
        lock = run_lock(dest, "selfsup finetune")
    with lock:
        return _finetune_all(run_dir, dest, overrides, random_init, device, log)


def _finetune_all(
    run_dir: Path,
    out: Path,
    overrides: dict[str, Any] | None,
    random_init: bool,
    device: str | None,
    log: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """:func:`finetune` once ``out`` is locked."""
    cfg = load_run_config(run_dir)
    cfg = apply_section_overrides(cfg, overrides, "finetune", "for fine-tuning")
    random_init = random_init or cfg.finetune.from_scratch
    set_threads(cfg.train.num_threads)
    dev = resolve_device(device or cfg.train.device)

    splits = load_data(cfg.data, progress=cfg.train.progress, subset=False)
    if cfg.augment.mean is None or cfg.augment.std is None:  # a config never trained (a sweep's cell from scratch)
        from ..train.loop import resolve_config

        cfg = resolve_config(cfg, splits)  # the training images' statistics, as pretraining would have set
    results = {}
    bf16 = use_bf16(cfg.train.precision, dev)
    for n_labels in cfg.finetune.labels:
        result = _finetune_one(cfg, splits, n_labels, run_dir, out, random_init, dev, log)
        section = "finetune_random_init" if random_init else "finetune"
        update_metrics_json(out, {str(n_labels): result}, section=section)
        record_machine(out, section, result.get("time_s", 0.0), dev, labels=n_labels, bf16=bf16)
        results[str(n_labels)] = result
    return results


def _split_labels(cfg: Config, splits: DataSplits, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """The labelled training images and the validation images (disjoint, class-balanced)."""
    ft = cfg.finetune
    labeled = class_balanced_indices(splits.train.labels, n_labels, ft.seed)
    rest = np.setdiff1d(np.arange(len(splits.train)), labeled)
    val = rest[class_balanced_indices(splits.train.labels[rest], min(ft.val_size, len(rest)), ft.seed + 1)]
    return labeled, val


def _build(
    cfg: Config, num_classes: int, run_dir: Path, random_init: bool, dev: torch.device
) -> tuple[Supervised, torch.optim.Optimizer]:
    """The encoder (pretrained or random) with a new linear head, and its optimizer."""
    ft = cfg.finetune
    torch.manual_seed(ft.seed)
    backbone = build_backbone(cfg.model.backbone, cfg.model.width, cfg.model.stem)
    if not random_init:
        load_backbone_weights(backbone, run_dir)
    model = Supervised(backbone, num_classes).to(dev)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    optim = OptimConfig(
        name=ft.optimizer, lr=ft.lr, lr_scaling="none", momentum=0.9, nesterov=True, weight_decay=ft.weight_decay
    )
    lr_mult = {"backbone.": ft.encoder_lr} if ft.encoder_lr != 1.0 else None
    return model, build_optimizer(model, optim, ft.batch_size, lr_mult)


def _augment(cfg: Config) -> ViewAugment:
    """The labelled images' augmentation (``finetune.preset``), normalised like the run's."""
    preset = cfg.finetune.preset
    assert cfg.augment.mean is not None and cfg.augment.std is not None
    spec = replace(resolve_augment(AugmentConfig(), preset), mean=cfg.augment.mean, std=cfg.augment.std)
    return ViewAugment([spec])


def _finetune_one(
    cfg: Config,
    splits: DataSplits,
    n_labels: int,
    run_dir: Path,
    out: Path,
    random_init: bool,
    dev: torch.device,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Fine-tune ``run_dir``'s encoder with ``n_labels`` labels (per-epoch log in ``out``), test the best epoch."""
    from tqdm import tqdm

    ft = cfg.finetune
    labeled, val = _split_labels(cfg, splits, n_labels)
    model, opt = _build(cfg, len(splits.train.classes), run_dir, random_init, dev)
    augment, bf16, feats = _augment(cfg), use_bf16(cfg.train.precision, dev), feature_options(cfg, dev)
    images, labels = torch.from_numpy(splits.train.images).to(dev), torch.from_numpy(splits.train.labels).to(dev)
    val_labels = torch.from_numpy(splits.train.labels[val]).to(dev)
    # Batches of one would break BatchNorm: a last batch of a single image is dropped.
    n_batches = len(labeled) // ft.batch_size + (len(labeled) % ft.batch_size > 1)
    total = ft.epochs * n_batches
    name = f"{n_labels}" + ("-random-init" if random_init else "")
    log_path = out / "finetune" / f"labels-{name}.jsonl"
    log_path.parent.mkdir(exist_ok=True)
    log_path.unlink(missing_ok=True)
    best: dict[str, Any] = {"val_loss": float("inf")}
    t0 = time.perf_counter()
    bar = tqdm(range(ft.epochs), desc=f"fine-tune {n_labels} labels", disable=not cfg.train.progress, leave=False)
    for epoch in bar:
        model.train()
        head_only = ft.freeze_encoder or epoch < ft.head_epochs
        model.backbone.requires_grad_(not head_only)
        if head_only:
            model.backbone.eval()  # a frozen encoder keeps its BatchNorm statistics
        g = torch.Generator().manual_seed(step_seed(ft.seed, epoch, stream=3))
        order = torch.as_tensor(labeled)[torch.randperm(len(labeled), generator=g)]
        for b in range(n_batches):
            step = epoch * n_batches + b
            idx = to_device(order[b * ft.batch_size : (b + 1) * ft.batch_size], dev)
            set_lr(opt, ft.lr * lr_factor(step, total, 0))
            gen = torch.Generator().manual_seed(step_seed(ft.seed, step, stream=4))
            train_step(model, opt, augment, images.index_select(0, idx), labels.index_select(0, idx), gen, dev,
                       bf16, step=step, epoch=epoch + b / n_batches, progress=step / total)  # fmt: skip
        logits = extract_features(model, splits.train.images[val], **feats)
        val_loss = float(F.cross_entropy(logits, val_labels))
        val_top1 = float((logits.argmax(1) == val_labels).float().mean())
        append_jsonl(log_path, {"epoch": epoch + 1, "val_loss": val_loss, "val_top1": val_top1})
        if val_loss < best["val_loss"]:
            state = copy.deepcopy(model.state_dict())
            best = {"val_loss": val_loss, "val_top1": val_top1, "epoch": epoch + 1, "state": state}
    if "state" not in best:  # every validation loss was NaN (or infinite)
        raise TrainingDivergedError(
            f"fine-tuning with {n_labels} labels diverged: the validation loss was {val_loss} in every epoch; "
            f"lower finetune.lr (now {ft.lr})"
        )
    model.load_state_dict(best.pop("state"))
    result = _test(model, splits, feats, best, n_labels, random_init, cfg, time.perf_counter() - t0, log)
    return result if random_init else {**result, "encoder": str(run_dir)}


def _test(
    model: nn.Module,
    splits: DataSplits,
    feats: dict[str, Any],
    best: dict[str, Any],
    n_labels: int,
    random_init: bool,
    cfg: Config,
    seconds: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Test accuracy of the chosen epoch, with what led to it."""
    ft = cfg.finetune
    logits = extract_features(model, splits.test.images, **feats)
    test_top1 = float((logits.argmax(1).cpu() == torch.from_numpy(splits.test.labels)).float().mean())
    result = {
        "test_top1": test_top1,
        "labels": n_labels,
        "best_epoch": best["epoch"],
        "val_loss": best["val_loss"],
        "val_top1": best["val_top1"],
        "epochs": ft.epochs,
        "val_size": min(ft.val_size, len(splits.train) - n_labels),
        "n_test": len(splits.test),
        "init": "random" if random_init else "pretrained",
        "freeze_encoder": ft.freeze_encoder,
        "time_s": seconds,
        # Every fine-tuning setting with the result: a fine-tuning written elsewhere (--out)
        # has no config.yaml of its own, and trials differ in exactly these.
        "settings": {k: v for k, v in asdict(ft).items() if k != "labels"},
    }
    log(
        f"fine-tuned ({result['init']} encoder, {n_labels} labels): test top-1 {test_top1:.4f} "
        f"(best epoch {best['epoch']}/{ft.epochs}, val loss {best['val_loss']:.4f})"
    )
    return result
