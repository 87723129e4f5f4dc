"""Evaluating a run: rebuild its encoder, extract features once, kNN and a linear probe, milestones.

Results land in ``RUN_DIR/metrics.json``; every process also appends its entry to
``RUN_DIR/machine.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import checkpoint_step, find_checkpoint, load_checkpoint, load_latest, milestone_paths
from ..config import Config, EvalConfig, apply_section_overrides
from ..data import DataSplits, load_data, with_subset
from ..errors import ConfigError, RunDirError
from ..machine import record_machine
from ..methods import Method, build_method
from ..rundir import load_run_config, locked, update_metrics_json
from ..runtime import resolve_device, set_threads
from .features import extract_features, feature_options
from .knn import knn_accuracy
from .linear import ProbeSettings, linear_probe


def load_run_model(
    run_dir: str | Path, device: torch.device | str = "cpu", random_init: bool = False, step: int | None = None
) -> tuple[Config, Method, dict[str, Any]]:
    """Rebuild a run's method from its config and newest checkpoint (or the one of ``step``).

    Args:
        run_dir: A run directory.
        device: Where to put the model.
        random_init: Skip the checkpoint: the same architecture at its seeded initialisation.
        step: Load the checkpoint of this training step instead of the newest.

    Returns:
        (config, model in eval mode, checkpoint state or ``{}``).

    Raises:
        RunDirError: If the run has no checkpoint (and ``random_init`` is false).
        CheckpointError: If it has none of ``step``.
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    state: dict[str, Any] = {}
    if step is not None and not random_init:
        state = load_checkpoint(find_checkpoint(run_dir, step))
    elif not random_init:
        loaded = load_latest(run_dir)
        if loaded is None:
            raise RunDirError(f"{run_dir} has no checkpoint yet; train it first (selfsup pretrain --out {run_dir})")
        state = loaded[0]
    torch.manual_seed(cfg.train.seed)
    model = build_method(cfg, len(state.get("classes", [])) or 10)
    if state:
        model.load_state_dict(state["model"])
    return cfg, model.to(device).eval(), state


def evaluate_features(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    cfg: EvalConfig,
    seed: int = 0,
) -> dict[str, Any]:
    """KNN and linear-probe accuracy of cached features (fractions)."""
    knn = knn_accuracy(
        train_features, train_labels, test_features, test_labels, num_classes, cfg.knn_k, cfg.knn_temperature
    )
    settings = ProbeSettings(cfg.linear_epochs, cfg.linear_lr, cfg.linear_batch_size, cfg.linear_optimizer,
                             cfg.linear_weight_decay, seed)  # fmt: skip
    probe = linear_probe((train_features, train_labels), (test_features, test_labels), num_classes, settings)
    return {
        "knn_top1": knn,
        "linear_top1": probe.test_top1,
        "linear_train_top1": probe.train_top1,
        "linear_loss": probe.final_loss,
    }


def evaluate_encoder(
    encoder: nn.Module, splits: DataSplits, cfg: EvalConfig, options: dict[str, Any], seed: int = 0
) -> dict[str, Any]:
    """Extract features of both splits once, then run :func:`evaluate_features`.

    Args:
        encoder: Maps normalised images to features.
        splits: Train split (kNN bank, probe training data) and test split.
        cfg: kNN and linear-probe settings.
        options: Keyword arguments of :func:`extract_features` (see :func:`feature_options`).
        seed: Seed of the linear probe.
    """
    t0 = time.perf_counter()
    train_f = extract_features(encoder, splits.train.images, **options)
    test_f = extract_features(encoder, splits.test.images, **options)
    t_feat = time.perf_counter() - t0
    out = evaluate_features(
        train_f,
        torch.from_numpy(splits.train.labels),
        test_f,
        torch.from_numpy(splits.test.labels),
        len(splits.train.classes),
        cfg,
        seed,
    )
    out.update(
        n_train=len(splits.train),
        n_test=len(splits.test),
        feature_dim=int(train_f.shape[1]),
        feature_time_s=t_feat,
        eval_time_s=time.perf_counter() - t0,
    )
    return out


def classifier_accuracies(model: nn.Module, splits: DataSplits, options: dict[str, Any]) -> dict[str, float]:
    """Test accuracy of each classifier a method has (``model.classifiers()``), as fractions.

    Args:
        model: A method; one without ``classifiers()`` gives an empty dict.
        splits: The data; only the test split is used.
        options: Keyword arguments of :func:`extract_features` (see :func:`feature_options`).
    """
    get = getattr(model, "classifiers", None)
    if get is None:  # any module can be evaluated; methods have classifiers()
        return {}
    labels = torch.from_numpy(splits.test.labels)
    out = {}
    for name, module in get().items():
        logits = extract_features(module, splits.test.images, **options)
        out[name] = float((logits.argmax(1).cpu() == labels).float().mean())
    return out


def _load_splits(cfg: Config, data: DataSplits | None = None) -> DataSplits:
    """The run's whole data (``data`` when the caller holds it) with the eval subset, if any."""
    splits = data if data is not None else load_data(cfg.data, progress=cfg.train.progress, subset=False)
    return with_subset(splits, cfg.eval.train_subset, 0)


@dataclass
class Trained:
    """A run still in memory, handed to evaluation by pretraining (nothing is loaded again).

    Attributes:
        model: The trained method.
        step: The step it reached (recorded with the results).
        data: The run's dataset, whole, as pretraining loaded it.
    """

    model: nn.Module
    step: int | None = None
    data: DataSplits | None = None


@dataclass
class Which:
    """Which encoder of a run :func:`evaluate_run` measures (default: the newest checkpoint's).

    Attributes:
        random_init: The architecture at its seeded random initialisation instead
            (stored under ``"random_init"``), the baseline for the trained figures.
        after_head: The output of the projection head instead of the encoder's (SimCLR's
            Figure 8 / B.4: the layer before the head is the better representation);
            stored under ``"after_head"``, the run's own results stay.
        checkpoint: The checkpoint of this step instead of the newest (its results go
            under ``steps`` in metrics.json, the run's own stay).
    """

    random_init: bool = False
    after_head: bool = False
    checkpoint: int | None = None


@locked("selfsup eval")
def evaluate_classifiers(
    run_dir: str | Path,
    device: str | None = None,
    log: Callable[[str], None] = print,
    trained: Trained | None = None,
) -> dict[str, Any]:
    """Test accuracy of a run's own classifier(s) (supervised, Pi-model, Mean Teacher).

    Results (``test_top1``, and ``student_test_top1`` for Mean Teacher) are merged into
    ``RUN_DIR/metrics.json``.

    Raises:
        RunDirError: If the run's method has no classifier.
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    dev = resolve_device(device or cfg.train.device)
    model, step, data = (trained.model, trained.step, trained.data) if trained else (None, None, None)
    if model is None:
        _, model, state = load_run_model(run_dir, dev)
        step = state.get("step")
    if not model.classifiers():  # type: ignore[operator]
        raise RunDirError(f"method {cfg.method.name!r} of {run_dir} has no classifier; use 'selfsup eval'")
    splits = _load_splits(cfg, data)
    t0 = time.perf_counter()
    result: dict[str, Any] = dict(classifier_accuracies(model, splits, feature_options(cfg, dev)))
    result.update(n_test=len(splits.test), eval_time_s=time.perf_counter() - t0)
    if cfg.semi.labels is not None:
        result["labels"] = cfg.semi.labels
    if step is not None:
        result["checkpoint_step"] = step
    parts = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in result.items() if k.endswith("top1"))
    log(f"classifier: {parts} (test set: {result['n_test']} images)")
    update_metrics_json(run_dir, result)
    record_machine(run_dir, "eval", result["eval_time_s"], dev)
    return result


@locked("selfsup eval")
def evaluate_milestones(
    run_dir: str | Path,
    overrides: dict[str, Any] | None = None,
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Evaluate every milestone checkpoint of a run (``train.checkpoint_every``) and the last one.

    Accuracy against epochs from one run: seed 000's epochs table without a run per row.
    The rows go into ``RUN_DIR/metrics.json`` under ``milestones`` (keyed by step).

    Returns:
        One dict per checkpoint, oldest first: epoch, step, kNN and linear top-1, and
        the test top-1 of the method's own classifiers (``test_top1``...) where it has any.

    Raises:
        RunDirError: If the run has no checkpoint.
    """
    run_dir = Path(run_dir)
    cfg = apply_section_overrides(load_run_config(run_dir), overrides, "eval", "at evaluation time")
    set_threads(cfg.train.num_threads)
    dev = resolve_device(device or cfg.train.device)
    steps = [checkpoint_step(p) for p in milestone_paths(run_dir)]
    latest = load_latest(run_dir)
    if latest is None:
        raise RunDirError(f"{run_dir} has no checkpoint yet; train it first (selfsup pretrain --out {run_dir})")
    if checkpoint_step(latest[1]) not in steps:
        steps.append(checkpoint_step(latest[1]))
    splits = _load_splits(cfg)
    options = feature_options(cfg, dev)
    rows = []
    for step in steps:
        _, model, state = load_run_model(run_dir, dev, step=step)
        encoder = model.backbone
        assert isinstance(encoder, nn.Module)
        result = evaluate_encoder(encoder, splits, cfg.eval, options, cfg.train.seed)
        row = {
            "epoch": state.get("epoch"),
            "step": step,
            "knn_top1": result["knn_top1"],
            "linear_top1": result["linear_top1"],
            "n_test": result["n_test"],
        }
        row.update(classifier_accuracies(model, splits, options))  # a few-label run's own classifiers
        rows.append(row)
        log(
            f"epoch {state.get('epoch')} (step {step}): "
            + " | ".join(
                f"{k.replace('_top1', '').replace('_', ' ')} top-1 {v:.4f}"
                for k, v in row.items()
                if k.endswith("top1")
            )
        )
    update_metrics_json(run_dir, {str(r["step"]): r for r in rows}, section="milestones")
    return rows


def result_line(what: str, result: dict[str, Any]) -> str:
    """The line evaluation prints (also what the docs quote): kNN and linear top-1, test size, time."""
    return (
        f"{what}: kNN top-1 {result['knn_top1']:.4f} | linear top-1 {result['linear_top1']:.4f} "
        f"(test set: {result['n_test']} images, {result['eval_time_s']:.0f} s)"
    )


@locked("selfsup eval")
def evaluate_run(
    run_dir: str | Path,
    overrides: dict[str, Any] | None = None,
    device: str | None = None,
    log: Callable[[str], None] = print,
    which: Which | None = None,
    trained: Trained | None = None,
) -> dict[str, Any]:
    """Evaluate a run's encoder and record the result in ``RUN_DIR/metrics.json``.

    Args:
        run_dir: The run directory.
        overrides: Dotted ``eval.*`` keys replacing the run's eval settings, e.g.
            ``{"eval.linear_epochs": 100}``.
        device: Device name (default: the run's ``train.device``).
        log: Where the one-line result goes.
        which: The random initialisation, the head's output or an older checkpoint
            instead of the newest checkpoint's encoder (:class:`Which`).
        trained: The run still in memory (pretraining hands it over; :class:`Trained`).

    Returns:
        ``knn_top1`` and ``linear_top1`` (fractions, on the full test split) and details.

    Raises:
        ConfigError: For ``which.after_head`` with ``random_init`` or ``checkpoint``, or a method
            without a projection head.
    """
    run_dir = Path(run_dir)
    w = which or Which()
    random_init, after_head, checkpoint = w.random_init, w.after_head, w.checkpoint
    model, step, data = (trained.model, trained.step, trained.data) if trained else (None, None, None)
    if after_head and (random_init or checkpoint is not None):
        raise ConfigError("--after-head evaluates a trained run's newest checkpoint (not --random-init or --step)")
    cfg = load_run_config(run_dir)
    cfg = apply_section_overrides(cfg, overrides, "eval", "at evaluation time")
    set_threads(cfg.train.num_threads)
    dev = resolve_device(device or cfg.train.device)
    if model is None or random_init or checkpoint is not None:
        _, model, state = load_run_model(run_dir, dev, random_init=random_init, step=checkpoint)
        step = state.get("step")
    splits = _load_splits(cfg, data)
    encoder = _encoder(model, after_head, f"method {cfg.method.name!r} of {run_dir}")
    options = feature_options(cfg, dev)
    result = evaluate_encoder(encoder, splits, cfg.eval, options, cfg.train.seed)
    result.update(
        knn_k=cfg.eval.knn_k,
        knn_temperature=cfg.eval.knn_temperature,
        linear_protocol=f"{cfg.eval.linear_optimizer} lr={cfg.eval.linear_lr} "
        f"epochs={cfg.eval.linear_epochs} batch={cfg.eval.linear_batch_size}",
    )
    if not (random_init or after_head):
        result.update(classifier_accuracies(model, splits, options))
    if step is not None:
        result["checkpoint_step"] = step
    log(result_line("random init" if random_init else "after the head" if after_head else "encoder", result))
    record_machine(run_dir, "eval-random-init" if random_init else "eval", result["eval_time_s"], dev, step=step)
    _store(run_dir, result, w)
    return result


def _encoder(model: nn.Module, after_head: bool, what: str) -> nn.Module:
    """The model's encoder, or the encoder followed by its projection head."""
    encoder = model.backbone
    assert isinstance(encoder, nn.Module)
    if not after_head:
        return encoder
    head = model.projection_head() if isinstance(model, Method) else None
    if head is None:
        raise ConfigError(f"{what} has no projection head to evaluate after")
    return nn.Sequential(encoder, head)


def _store(run_dir: Path, result: dict[str, Any], which: Which) -> None:
    """Where ``metrics.json`` keeps an evaluation: the run's own results, or beside them."""
    if which.random_init:
        update_metrics_json(run_dir, {"random_init": result})
    elif which.after_head:
        update_metrics_json(run_dir, {"after_head": result})
    elif which.checkpoint is not None:
        update_metrics_json(run_dir, {str(which.checkpoint): result}, section="steps")
    else:
        update_metrics_json(run_dir, result)
