"""Configuration: one dataclass per concern, loaded from YAML and overridden by flags.

A :class:`Config` has the sections ``data``, ``augment``, ``model``, ``method``,
``semi``, ``optim``, ``train``, ``eval`` and ``finetune``. Each key is declared once, by
:func:`setting`: its type (the annotation), default, help text (what ``--help`` shows) and
valid range (what :func:`validate` checks); recipes in ``configs/`` only state what they
change. Every key can be overridden by a dotted name
(``train.epochs=5``), which is also how the CLI flags (``--train.epochs 5`` or the short
``--epochs 5``) and sweeps address it. The resolved config (presets expanded, statistics
filled in) is saved in each run directory as ``config.yaml``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import ConfigError


@dataclass(frozen=True)
class Check:
    """A setting's valid range: ``ok(value)`` (never asked of None) and what an error says otherwise."""

    ok: Callable[[Any], bool]
    why: str


def _positive(v: Any) -> bool:
    return bool(v > 0)


def at_least(n: int, why: str) -> Check:
    """Values of ``n`` and more."""
    return Check(lambda v: v >= n, why)


POSITIVE = Check(_positive, "must be positive")
POSITIVE_INT = Check(_positive, "must be a positive integer")
NOT_NEGATIVE = Check(lambda v: v >= 0, "must not be negative")
FRACTION = Check(lambda v: 0 <= v < 1, "must lie in [0, 1)")


def setting(default: Any, help: str, check: Check | None = None, free: bool = False, factory: bool = False) -> Any:
    """A config field with everything about it in one place: default, help text, valid range.

    The type is the field's annotation; ``--help`` shows ``help``; :func:`validate`
    applies ``check``.

    Args:
        default: The default value (with ``factory``, a function that makes it).
        help: One line for ``--help``.
        check: The valid range (None: any value of the type).
        free: The key may change on ``--resume``: it changes how a run executes (device,
            logging, checkpoint cadence), not what it computes.
        factory: ``default`` is a factory (for lists).
    """
    metadata: dict[str, Any] = {"help": help, "check": check, "free": free}
    if factory:
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class DataConfig:
    """Which images to train on and how to prepare them."""

    name: str = setting(
        "cifar10",
        (
            "'cifar10' (the bundled JPEG tarballs), 'cifar10-pickle' (the official python release) or a path: an "
            "ImageFolder directory (with train/ and test/ or class folders), a tar of one, a folder holding "
            "train.tar.gz and test.tar.gz, or a cifar-10-batches-py folder."
        ),
    )
    subset: Union[int, None] = setting(
        None, "Class-balanced subset of the training split, chosen by train.seed (None = all).", check=POSITIVE_INT
    )
    image_size: int = setting(
        32,
        "Images of other sizes are resized (shorter side) and centre-cropped to this.",
        check=at_least(8, "must be at least 8"),
    )
    root: Union[str, None] = setting(
        None,
        (
            "Where named datasets live (default: $SELFSUP_DATA_DIR, else ./data, else the data/ folder of the "
            "selfsup checkout)."
        ),
    )
    download: bool = setting(False, "Download 'cifar10-pickle' when it is missing (needs internet access).")
    skip_invalid: bool = setting(
        False,
        (
            "Skip unreadable or non-image files, and archive members or folder entries that are not regular files"
            " inside the source (links, devices, '..' or absolute names), with a warning, instead of stopping "
            "with an error."
        ),
    )
    max_file_mb: float = setting(
        64.0,
        (
            "Refuse an image file or archive member larger than this many megabytes before reading it (a "
            "decompression-bomb guard; with data.skip_invalid, skip it)."
        ),
        check=Check(_positive, "must be positive (megabytes)"),
    )
    test_fraction: float = setting(
        0.1,
        "For a folder with a single split: fraction held out (class-balanced) as test split.",
        check=Check(lambda v: 0 < v < 1, "must lie in (0, 1)"),
    )


@dataclass
class AugmentConfig:
    """Augmentation of training views; unset (None) values come from the preset.

    Presets (see ``selfsup.augment.PRESETS``): simclr, seed000, moco_v2, supervised,
    weak, none. The default preset is the method's own.
    """

    preset: Union[Literal["simclr", "seed000", "moco_v2", "supervised", "weak", "none"], None] = setting(
        None,
        (
            "A preset every unset value comes from: simclr, seed000, moco_v2, supervised, weak, none (None = the "
            "method's own). A Literal, so that 'none' stays the preset of that name instead of reading as "
            '"unset" (which gave the method\'s own preset).'
        ),
    )
    crop: Union[Literal["resized", "pad", "none"], None] = setting(
        None, "'resized' (RandomResizedCrop), 'pad' (translate by up to ``pad`` px) or 'none'."
    )
    crop_scale: Union[list[float], None] = setting(None, "Area fraction range of the resized crop, e.g. 0.08,1.")
    crop_ratio: Union[list[float], None] = setting(None, "Aspect-ratio range of the resized crop, e.g. 0.75,1.333.")
    pad: Union[int, None] = setting(None, "Largest translation in pixels of the 'pad' crop.")
    flip_p: Union[float, None] = setting(None, "Probability of a horizontal flip.")
    jitter_strength: Union[float, None] = setting(
        None, "Colour jitter strength s: brightness, contrast, saturation 0.8 s and hue 0.2 s."
    )
    jitter_p: Union[float, None] = setting(None, "Probability of colour jitter.")
    grayscale_p: Union[float, None] = setting(None, "Probability of converting to grayscale.")
    blur_p: Union[float, None] = setting(None, "Probability of a Gaussian blur.")
    blur_kernel: Union[int, None] = setting(
        None, "Odd kernel size; 0 = seed 000's rule, image size // 10 made odd (3 for 32x32, 9 for 96x96)."
    )
    blur_sigma: Union[list[float], None] = setting(None, "Range of the blur's sigma, e.g. 0.1,2.0.")
    solarize_p: Union[float, None] = setting(
        None, "Probability of solarizing (inverting intensities at or above 0.5; BYOL)."
    )
    randaugment_n: Union[int, None] = setting(
        None, "RandAugment operations per image, FixMatch's list and ranges (0 = none; FixMatch: 2)."
    )
    cutout: Union[float, None] = setting(
        None, "Largest Cutout square, as a fraction of the image side (0 = none; FixMatch: 0.5)."
    )
    sobel_p: Union[float, None] = setting(
        None, "Probability of replacing an image by its Sobel edge magnitude (SimCLR's Figure 5 op)."
    )
    noise_p: Union[float, None] = setting(None, "Probability of adding Gaussian noise ...")
    noise_std: Union[float, None] = setting(
        None, "... whose std is drawn per image uniformly in [0, noise_std] (intensities in [0, 1])."
    )
    rotate_p: Union[float, None] = setting(
        None, "Probability of rotating by 90, 180 or 270 degrees (one of the three, uniformly)."
    )
    second_view: Union[Literal["same", "identity"], None] = setting(
        None,
        (
            "'identity': the second view is the image itself, only normalised; the first view alone is augmented "
            "(SimCLR's Figure 5 setting). 'same': both views alike."
        ),
    )
    mean: Union[list[float], None] = setting(None, "Per-channel normalisation mean; None = the training split's own.")
    std: Union[list[float], None] = setting(None, "Per-channel normalisation std; None = the training split's own.")


@dataclass
class ModelConfig:
    """The encoder and its projection head."""

    backbone: str = setting(
        "preact_resnet26", "A registered backbone: preact_resnet8/20/26/56, resnet18, resnet34, resnet50, mobilenet_v2."
    )
    width: float = setting(
        1,
        (
            "Width multiplier: whole numbers for the pre-activation ResNets (16/32/64 x width channels), any "
            "positive value for mobilenet_v2 (e.g. 0.5), 1 for the ResNets."
        ),
        check=POSITIVE,
    )
    stem: Literal["cifar", "imagenet"] = setting(
        "cifar",
        (
            "First layers: 'cifar' (3x3 stride-1 convolution, no max-pool: for 32x32 images) or 'imagenet' "
            "(torchvision's downsampling stem, as seeds 001, 003 and 004 ran it)."
        ),
    )
    head_dims: list[int] = setting(
        lambda: [512, 128],
        (
            "Head layer sizes after the encoder's features: [64, 32] makes seed 000's 64-64-32 head on a 64-d "
            "encoder; the SimCLR paper uses [2048, 128]; [128] is a linear head and [] none (the loss on the "
            "features themselves)."
        ),
        check=Check(lambda v: all(x > 0 for x in v), "sizes must be positive"),
        factory=True,
    )
    head_bn: bool = setting(True, "BatchNorm after each hidden layer of the head (the paper's head).")
    init: Union[str, None] = setting(
        None,
        (
            "Start the backbone from another run's encoder: a run directory (its newest checkpoint) or a "
            "checkpoint file. None = random initialisation."
        ),
    )


@dataclass
class MethodConfig:
    """The training method: its name, and its own settings as given.

    Each method declares its settings (type, default, help, range) in its own file
    (:mod:`selfsup.methods`); this section keeps them as a recipe or flags give them
    (``values``, written flat beside ``name`` in YAML and as ``method.KEY`` flags).
    :func:`selfsup.methods.resolve_method` checks them against the chosen method's
    declaration, fills its defaults and drops keys that only another method has, which
    is what a saved config then holds.
    """

    name: str = setting("simclr", "A registered method (see ``selfsup.methods.METHODS``).")
    values: dict[str, Any] = field(default_factory=dict, metadata={"help": "The method's own settings."})


@dataclass
class SemiConfig:
    """Semi-supervised training with few labels (``selfsup semi``)."""

    labels: Union[int, None] = setting(
        None,
        (
            "Number of labelled images, a class-balanced subset chosen by train.seed. The other images of the "
            "training split are used without their labels."
        ),
        check=POSITIVE_INT,
    )
    labeled_batch_size: int = setting(
        32, "Labelled images per step, in addition to train.batch_size unlabelled ones.", check=POSITIVE_INT
    )


#: Keys that the ``semi`` section held before the semi-supervised methods owned them: a
#: config or a spec that still writes ``semi.KEY`` sets ``method.KEY``.
MOVED_TO_METHOD = {"consistency_weight", "rampup_epochs", "ema_decay", "ema_decay_rampup", "threshold",
                   "unlabeled_weight"}  # fmt: skip


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule."""

    name: Literal["lars", "sgd", "adam", "adamw"] = setting("lars", "'lars', 'sgd', 'adam' or 'adamw'.")
    lr: float = setting(1.0, "Learning rate for a batch of 256; scaled by ``lr_scaling``.", check=POSITIVE)
    lr_scaling: Literal["linear", "sqrt", "none"] = setting(
        "linear", "'linear' (lr * batch / 256), 'sqrt' (lr * sqrt(batch / 256)) or 'none'."
    )
    momentum: float = setting(0.9, "Momentum of SGD and LARS (Adam's beta1 stays 0.9).", check=FRACTION)
    nesterov: bool = setting(False, "Nesterov momentum for SGD (Mean Teacher's paper uses it; MoCo's does not).")
    weight_decay: float = setting(
        1e-6, "L2 weight decay (LARS and SGD skip BatchNorm and bias parameters).", check=NOT_NEGATIVE
    )
    trust_coefficient: float = setting(0.001, "LARS trust coefficient (eta).", check=POSITIVE)
    warmup_epochs: float = setting(
        1.0, "Linear warm-up, in epochs (fractions allowed), then the schedule.", check=NOT_NEGATIVE
    )
    schedule: Literal["cosine", "constant", "step"] = setting(
        "cosine",
        (
            "'cosine' (decay to 0 after warm-up), 'constant', or 'step' (x0.1 at 60 % and 80 % of the run: MoCo "
            "v1's, before MoCo v2 made it cosine)."
        ),
    )


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = setting(100, "Passes over the training images.", check=POSITIVE_INT)
    time_budget: Union[float, None] = setting(
        None,
        (
            "Train for this many minutes instead of train.epochs: the steps that fit are planned from measured "
            "step times and every schedule ends with the budget (evaluation not included); the plan is saved in "
            "RUN_DIR/plan.json for --resume."
        ),
        check=Check(_positive, "must be positive (minutes)"),
    )
    budget_scale: float = setting(
        1.0,
        (
            "Wall-clock minutes this machine trains per minute of ``train.time_budget``: a table whose budget was"
            " set for one machine continues on a slower one at equal steps (e.g. 1.5 where the bare step runs at "
            "two thirds of that machine's views/s; see ``selfsup sweep --budget-scale``). Recorded with the run, "
            "not part of what it computes."
        ),
        check=Check(_positive, "must be positive (wall minutes per budget minute)"),
        free=True,
    )
    replan: bool = setting(
        True,
        (
            "With train.time_budget: re-plan the remaining steps from the measured step time about 20 times in a "
            "run (each re-plan saved with a checkpoint), so the budget holds when the machine gets slower or "
            "faster; false keeps the first plan."
        ),
    )
    batch_size: int = setting(
        256,
        "Images per step (SimCLR sees two views of each).",
        check=at_least(2, "must be at least 2 (batch statistics)"),
    )
    low_res: int = setting(
        0,
        (
            "Progressive resizing: views of this side in pixels for the first ``train.low_res_until`` of the "
            "steps, full-size views after (0 = always full size). Early steps get cheaper (24 px: 0.56 of the "
            "pixels); the network ends on the size it is evaluated at (FixRes, Touvron et al. 2019; FFCV's "
            "progressive resizing)."
        ),
        check=Check(lambda v: v == 0 or v >= 8, "must be 0 (off) or at least 8 pixels"),
    )
    low_res_until: float = setting(
        0.5,
        "Fraction of the run's steps trained at ``train.low_res``.",
        check=Check(lambda v: 0 <= v <= 1, "must be a fraction of the run, in [0, 1]"),
    )
    seed: int = setting(0, "Seeds the model, the data order and every augmentation (a function of seed and step).")
    device: str = setting("auto", "'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.", free=True)
    precision: Literal["auto", "bf16", "fp32"] = setting(
        "auto",
        (
            "'auto' (bf16 autocast where the device computes bf16 natively: CUDA, and CPUs with AVX512-BF16 or "
            "AMX), 'bf16' or 'fp32'."
        ),
        free=True,
    )
    channels_last: bool = setting(True, "Feed images in channels_last memory format (faster convolutions).")
    compile: bool = setting(
        False,
        "torch.compile the model, and on a GPU the augmentation too (pays on GPUs; costs start-up time).",
        free=True,
    )
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = setting(
        "default", "torch.compile mode: 'default', 'reduce-overhead' (CUDA graphs) or 'max-autotune'.", free=True
    )
    sync_bn: bool = setting(
        False, "Under torchrun on GPUs: BatchNorm statistics over the whole global batch.", free=True
    )
    num_threads: Union[int, None] = setting(
        None, "CPU threads for PyTorch (None = PyTorch's default).", check=POSITIVE, free=True
    )
    checkpoint_every: int = setting(
        0,
        (
            "Keep the checkpoint of every N-th epoch for 'selfsup eval --milestones' (seed 000: 40); 0 = none. A "
            "rolling checkpoint is written at the end of every epoch anyway."
        ),
        check=NOT_NEGATIVE,
        free=True,
    )
    checkpoint_minutes: float = setting(
        10.0, "Also save one when this many minutes passed since the last (0 = never).", check=NOT_NEGATIVE, free=True
    )
    keep_checkpoints: int = setting(
        2,
        "How many rolling checkpoints to keep (older ones are deleted; milestones stay).",
        check=POSITIVE_INT,
        free=True,
    )
    knn_every: int = setting(0, "Run the kNN monitor every N epochs (0 = never).", check=NOT_NEGATIVE, free=True)
    log_every: int = setting(
        10, "Log (and read the loss back from the device) every N steps.", check=POSITIVE_INT, free=True
    )
    progress: bool = setting(True, "Show a progress bar.", free=True)
    eval_after: bool = setting(True, "Evaluate (kNN and linear probe) when pretraining ends.", free=True)


@dataclass
class EvalConfig:
    """Evaluation of a frozen encoder: weighted kNN and a linear probe on its features."""

    knn_k: int = setting(
        200, "Neighbours of the weighted kNN classifier (k=200 as in InstDisc and SimCLR code).", check=POSITIVE_INT
    )
    knn_temperature: float = setting(0.1, "Temperature of the kNN weights exp(similarity / t).", check=POSITIVE)
    linear_optimizer: Literal["adam", "sgd"] = setting(
        "adam", "Linear probe optimizer on the cached features: 'adam' or 'sgd'."
    )
    linear_lr: float = setting(1e-3, "Learning rate of the linear probe.", check=POSITIVE)
    linear_epochs: int = setting(30, "Epochs of the linear probe over the cached features.", check=POSITIVE_INT)
    linear_batch_size: int = setting(256, "Batch size of the linear probe.", check=POSITIVE_INT)
    linear_weight_decay: float = setting(0.0, "Weight decay of the linear probe.")
    batch_size: int = setting(256, "Images per forward pass when extracting features.", check=POSITIVE_INT)
    train_subset: Union[int, None] = setting(
        None, "Use only a class-balanced subset of the training split as kNN bank / probe data.", check=POSITIVE
    )
    monitor_train: int = setting(
        5000, "Size of the kNN monitor's bank (training images) during training ...", check=POSITIVE
    )
    monitor_test: int = setting(1000, "... and of its query set (test images).", check=POSITIVE)


@dataclass
class FinetuneConfig:
    """Fine-tuning an encoder with few labels (``selfsup finetune``)."""

    labels: list[int] = setting(
        lambda: [1000],
        (
            "Labelled training images (class-balanced, chosen by ``seed``); one fine-tuning per entry, e.g. seed "
            "001's [300, 500, 1000, 1500]."
        ),
        check=Check(lambda v: len(v) > 0 and min(v) > 0, "must be positive integers"),
        factory=True,
    )
    val_size: int = setting(
        500,
        (
            "Validation images (class-balanced, from the rest of the training split) used to keep the epoch with "
            "the lowest validation loss."
        ),
        check=POSITIVE_INT,
    )
    epochs: int = setting(50, "Passes over the labelled images.", check=POSITIVE_INT)
    batch_size: int = setting(64, "Labelled images per step.", check=at_least(2, "must be at least 2"))
    optimizer: Literal["sgd", "adam"] = setting(
        "sgd", "'sgd' (momentum 0.9, nesterov) or 'adam'; cosine decay over all steps."
    )
    lr: float = setting(0.05, "Learning rate (no batch scaling).", check=POSITIVE)
    weight_decay: float = setting(5e-4, "Weight decay of every parameter.", check=NOT_NEGATIVE)
    freeze_encoder: bool = setting(False, "Train only the new linear head (linear evaluation with augmentation).")
    encoder_lr: float = setting(
        1.0,
        (
            "Multiplier of the encoder's learning rate (the head's is ``lr``); below 1 keeps a pretrained encoder"
            " closer to where it started."
        ),
        check=NOT_NEGATIVE,
    )
    head_epochs: int = setting(
        0,
        (
            "First train the head alone for this many epochs (encoder frozen, its BatchNorm statistics kept), "
            "then every layer: LP-FT (Kumar et al. 2022), which keeps a randomly initialised head from distorting"
            " pretrained features. Counted in ``epochs``."
        ),
        check=NOT_NEGATIVE,
    )
    from_scratch: bool = setting(
        False, 'Start from a randomly initialised encoder instead (the "from scratch" reference).'
    )
    time_budget: Union[float, None] = setting(
        None,
        (
            "Train each fine-tuning for this many minutes instead of ``epochs`` epochs (the steps that fit, "
            "planned and re-planned as ``train.time_budget`` does; None = epochs)."
        ),
        check=Check(_positive, "must be positive (minutes)"),
    )

    preset: str = setting("supervised", "Augmentation preset of the labelled images.")
    seed: int = setting(0, "Chooses the labelled and validation images, the head's initialisation and the order.")


@dataclass
class Config:
    """A whole run: every section."""

    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    semi: SemiConfig = field(default_factory=SemiConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


#: Section name -> its dataclass.
SECTIONS: dict[str, type] = dict(typing.get_type_hints(Config))

#: Short CLI flags for the keys people type most; every key also has --section.key.
SHORT_FLAGS: dict[str, str] = {
    "data": "data.name",
    "subset": "data.subset",
    "method": "method.name",
    "backbone": "model.backbone",
    "epochs": "train.epochs",
    "time-budget": "train.time_budget",
    "batch-size": "train.batch_size",
    "seed": "train.seed",
    "device": "train.device",
    "lr": "optim.lr",
    "optimizer": "optim.name",
    "temperature": "method.temperature",
    "preset": "augment.preset",
    "labels": "semi.labels",
    "init": "model.init",
}


@functools.cache
def type_hints(cls: Any) -> Mapping[str, Any]:
    """Resolved type hints of a settings dataclass (read-only, cached: resolving is slow)."""
    return types.MappingProxyType(typing.get_type_hints(cls))


@functools.cache
def field_types(section: str) -> Mapping[str, Any]:
    """Resolved type hints of a section's fields (read-only).

    Cached: resolving the string annotations is slow (``typing.get_type_hints`` compiles
    each one), and every override, copy and check of a config asks again; a sweep's plan
    asked ~13,000 times.
    """
    return type_hints(SECTIONS[section])


def all_keys() -> list[str]:
    """Every dotted key of the sections (the method's own settings aside), e.g. ``['data.name', ...]``."""
    return [f"{s}.{k}" for s in SECTIONS for k in field_types(s) if (s, k) != ("method", "values")]


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _coerce_list(value: Any, item: Any, where: str) -> list[Any]:
    """A list from a list, a tuple, a comma-separated string or a single number."""
    if isinstance(value, str):
        value = [yaml.safe_load(v) for v in value.strip("[]").split(",") if v.strip()]
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]  # a single value where a list is expected: a list of one
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]


def _to_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


def _to_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str, float)):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    try:
        as_float = float(value)
    except ValueError:
        raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if not as_float.is_integer():
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    return int(as_float)


def _to_float(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number, got {value!r}") from None


def _to_str(value: Any, where: str) -> str:
    if isinstance(value, (dict, list)) or value is None:
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return str(value)


#: Type -> what reads a value as it (gently: ints for floats, 'true' for True).
_SCALARS: dict[Any, Callable[[Any, str], Any]] = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently convert) ``value`` to the annotated type ``tp``.

    Accepts what YAML or a flag naturally produces: ints for floats, a comma-separated
    string or a list for list fields, 'null'/'none' for optional ones.

    Raises:
        ConfigError: Naming ``where`` and the expected type.
    """
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            close = _suggest(str(value), [str(c) for c in allowed])
            raise ConfigError(f"{where}: must be one of {', '.join(map(str, allowed))}, got {value!r}{close}")
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        literal = choices(tp) or ()
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none") and value not in literal):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], where)
    if origin is list:
        return _coerce_list(value, typing.get_args(tp)[0], where)
    if tp in _SCALARS:
        return _SCALARS[tp](value, where)
    raise TypeError(f"unsupported config type {tp!r} at {where}")


def _check_section_dict(section: str, values: Any, source: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: section '{section}' must be a mapping of keys to values")
    known = list(field_types(section))
    for key in values:
        if key not in known:
            raise ConfigError(f"{source}: unknown key '{key}' in section '{section}'{_suggest(str(key), known)}")


def config_from_dict(raw: Any, source: str = "config") -> Config:
    """Build a :class:`Config` from nested dicts, rejecting unknown keys and wrong types.

    The ``method`` section's keys other than ``name`` are kept as given; the method
    checks them (:func:`selfsup.methods.resolve_method`).

    Args:
        raw: ``{section: {key: value}}``; missing keys keep their defaults.
        source: Shown in error messages (e.g. the YAML file's path).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (data, model, ...)")
    cfg, moved = Config(), {}
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown section '{section}'{_suggest(str(section), list(SECTIONS))}")
        if section == "method":
            cfg.method = _method_section(values, source)
            continue
        if section == "semi" and isinstance(values, dict):
            moved = {k: v for k, v in values.items() if k in MOVED_TO_METHOD}
            values = {k: v for k, v in values.items() if k not in moved}
        _check_section_dict(section, values, source)
        types_ = field_types(section)
        obj = getattr(cfg, section)
        for key, value in (values or {}).items():
            setattr(obj, key, coerce(value, types_[key], f"{source}: {section}.{key}"))
    cfg.method.values = {**copy.deepcopy(moved), **cfg.method.values}  # old semi.KEY; method.KEY wins
    validate(cfg)
    return cfg


def _method_section(values: Any, source: str) -> MethodConfig:
    """The ``method`` section: its name, and every other key as given."""
    if values is None:
        return MethodConfig()
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: section 'method' must be a mapping of keys to values")
    rest = {str(k): copy.deepcopy(v) for k, v in values.items() if k != "name"}
    name = coerce(values.get("name", "simclr"), str, f"{source}: method.name")
    return MethodConfig(name=name, values=rest)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load a YAML recipe (or the defaults) and apply dotted overrides.

    Args:
        path: A YAML file with sections as top-level keys, or None for the defaults.
        overrides: ``{"train.epochs": 5, ...}``; values may be strings as typed on a
            command line (they are parsed as YAML scalars).

    Returns:
        The validated config (not yet resolved against data and method).

    Raises:
        ConfigError: For a missing or malformed file, an unknown key or a bad value.
    """
    raw: dict[str, Any] = load_yaml(path) if path is not None else {}
    cfg = config_from_dict(raw, str(path) if path is not None else "defaults")
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return cfg


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file; :class:`ConfigError` if missing, malformed or not a mapping."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of sections (data, model, ...)")
    return raw


def apply_overrides(cfg: Config, overrides: dict[str, Any], source: str = "override") -> Config:
    """Return a copy of ``cfg`` with dotted keys replaced (``{"method.temperature": 0.1}``).

    ``method.*`` keys other than ``method.name`` are kept as given (strings parsed as
    YAML); the method checks them (:func:`selfsup.methods.resolve_method`).
    """
    out = copy_config(cfg)
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section == "semi" and key in MOVED_TO_METHOD:
            section = "method"  # a semi-supervised method's own setting now
        is_method_value = section == "method" and key and key != "name"
        if not is_method_value and (section not in SECTIONS or key not in field_types(section)):
            raise ConfigError(f"{source}: unknown config key '{dotted}'{_suggest(dotted, all_keys())}")
        if isinstance(value, str):
            try:
                parsed = yaml.safe_load(value) if value.strip() else value
            except yaml.YAMLError:  # not YAML ('@encoder', 'a: b: c'): the string itself
                parsed = value
            # Keep strings that YAML would turn into something else for str fields.
            value = value if not is_method_value and field_types(section)[key] is str else parsed
        if is_method_value:
            out.method.values[key] = value
            continue
        setattr(getattr(out, section), key, coerce(value, field_types(section)[key], f"{source} {dotted}"))
    validate(out)
    return out


def apply_section_overrides(cfg: Config, overrides: dict[str, Any] | None, section: str, when: str) -> Config:
    """Like :func:`apply_overrides`, for overrides that may only touch one section.

    Re-evaluating or fine-tuning a finished run may change how it is measured, never how
    it was trained, so a key outside ``section`` is refused.

    Raises:
        ConfigError: For a key outside ``section`` (named in the message) or a bad value.
    """
    if not overrides:
        return cfg
    bad = [k for k in overrides if not k.startswith(section + ".")]
    if bad:
        raise ConfigError(f"only {section}.* settings can change {when}, not {bad[0]}")
    return apply_overrides(cfg, overrides)


def copy_config(cfg: Config) -> Config:
    """A deep copy."""
    return config_from_dict(config_to_dict(cfg), "copy")


def config_to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    """Nested plain dicts (YAML- and JSON-safe); the method's settings flat beside its name."""
    out = dataclasses.asdict(cfg)
    out["method"] = {"name": cfg.method.name, **copy.deepcopy(cfg.method.values)}
    return out


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def flatten(cfg: Config) -> dict[str, Any]:
    """``{"train.epochs": 100, ...}`` for every key."""
    return {f"{s}.{k}": v for s, d in config_to_dict(cfg).items() for k, v in d.items()}


def diff(a: Config, b: Config) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ: ``{key: (a_value, b_value)}``."""
    fa, fb = flatten(a), flatten(b)
    return {k: (fa[k], fb[k]) for k in fa if fa[k] != fb[k]}


def choices(tp: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal`` field type (also inside ``Union[..., None]``), else None."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            if typing.get_origin(arg) is Literal:
                return typing.get_args(arg)
    return None


def resume_free_keys() -> set[str]:
    """Dotted keys marked on their field as free to change on ``--resume`` (see :func:`setting`)."""
    return {f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls) if f.metadata.get("free")}


def field_help(section: str) -> dict[str, str]:
    """Each field's help text (the flags' ``--help``)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(SECTIONS[section])}


def check_fields(values: Any, where: str) -> None:
    """The allowed values and range of every field of a settings dataclass (see :func:`setting`).

    Args:
        values: A dataclass instance (a section, or a method's settings).
        where: The section name that prefixes keys in messages (``train``, ``method``).

    Raises:
        ConfigError: Naming the key, the rule and the value.
    """
    kind: Any = type(values)
    hints = type_hints(kind)
    for f in dataclasses.fields(values):
        value = getattr(values, f.name)
        allowed = choices(hints[f.name])
        if allowed is not None and value is not None and value not in allowed:
            raise ConfigError(f"{where}.{f.name} must be one of {', '.join(map(str, allowed))}, got {value!r}")
        check = f.metadata.get("check")
        if check is not None and value is not None and not check.ok(value):
            raise ConfigError(f"{where}.{f.name} {check.why}, got {value!r}")


def validate(cfg: Config) -> None:
    """Every key's allowed values and range (:func:`setting`), and the few rules between keys.

    The method's own settings are checked by the method (:func:`selfsup.methods.resolve_method`).

    Raises:
        ConfigError: Naming the key, the rule and the value.
    """
    for section in SECTIONS:
        if section != "method":
            check_fields(getattr(cfg, section), section)
    ft = cfg.finetune
    if ft.head_epochs >= ft.epochs:
        raise ConfigError(f"finetune.head_epochs must lie in [0, finetune.epochs), got {ft.head_epochs!r}")
