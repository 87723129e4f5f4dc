"""Configuration: one dataclass per concern, loaded from YAML and overridden by flags.

A :class:`Config` has the sections ``data``, ``augment``, ``model``, ``method``,
``optim``, ``train`` and ``eval``. Every default lives here, in one place; recipes in
``configs/`` only state what they change. Every key can be overridden by a dotted name
(``train.epochs=5``), which is also how the CLI flags (``--train.epochs 5`` or the short
``--epochs 5``) and sweeps address it. The resolved config (presets expanded, statistics
filled in) is saved in each run directory as ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import ConfigError

#: Field metadata of keys that may change on ``--resume``: they change how a run
#: executes (device, logging, checkpoint cadence), not what it computes.
FREE = {"resume": "free"}


@dataclass
class DataConfig:
    """Which images to train on and how to prepare them."""

    #: 'cifar10' (the bundled JPEG tarballs), 'cifar10-pickle' (the official python
    #: release) or a path: an ImageFolder directory (with train/ and test/ or class
    #: folders), a tar of one, a folder holding train.tar.gz and test.tar.gz, or a
    #: cifar-10-batches-py folder.
    name: str = "cifar10"
    #: Class-balanced subset of the training split, chosen by train.seed (None = all).
    subset: Union[int, None] = None
    #: Images of other sizes are resized (shorter side) and centre-cropped to this.
    image_size: int = 32
    #: Where named datasets live (default: $SELFSUP_DATA_DIR, else ./data, else the
    #: data/ folder of the selfsup checkout).
    root: Union[str, None] = None
    #: Download 'cifar10-pickle' when it is missing (needs internet access).
    download: bool = False
    #: Skip unreadable or non-image files, and archive members or folder entries that are
    #: not regular files inside the source (links, devices, '..' or absolute names),
    #: with a warning, instead of stopping with an error.
    skip_invalid: bool = False
    #: Refuse an image file or archive member larger than this many megabytes before
    #: reading it (a decompression-bomb guard; with data.skip_invalid, skip it).
    max_file_mb: float = 64.0
    #: For a folder with a single split: fraction held out (class-balanced) as test split.
    test_fraction: float = 0.1


@dataclass
class AugmentConfig:
    """Augmentation of training views; unset (None) values come from the preset.

    Presets (see ``selfsup.augment.PRESETS``): simclr, seed000, moco_v2, supervised,
    weak, none. The default preset is the method's own.
    """

    #: A preset every unset value comes from: simclr, seed000, moco_v2, supervised, weak,
    #: none (None = the method's own). A Literal, so that 'none' stays the preset of that
    #: name instead of reading as "unset" (which gave the method's own preset).
    preset: Union[Literal["simclr", "seed000", "moco_v2", "supervised", "weak", "none"], None] = None
    #: 'resized' (RandomResizedCrop), 'pad' (translate by up to ``pad`` px) or 'none'.
    crop: Union[Literal["resized", "pad", "none"], None] = None
    #: Area fraction range of the resized crop, e.g. 0.08,1.
    crop_scale: Union[list[float], None] = None
    #: Aspect-ratio range of the resized crop, e.g. 0.75,1.333.
    crop_ratio: Union[list[float], None] = None
    #: Largest translation in pixels of the 'pad' crop.
    pad: Union[int, None] = None
    #: Probability of a horizontal flip.
    flip_p: Union[float, None] = None
    #: Colour jitter strength s: brightness, contrast, saturation 0.8 s and hue 0.2 s.
    jitter_strength: Union[float, None] = None
    #: Probability of colour jitter.
    jitter_p: Union[float, None] = None
    #: Probability of converting to grayscale.
    grayscale_p: Union[float, None] = None
    #: Probability of a Gaussian blur.
    blur_p: Union[float, None] = None
    #: Odd kernel size; 0 = seed 000's rule, image size // 10 made odd (3 for 32x32, 9 for 96x96).
    blur_kernel: Union[int, None] = None
    #: Range of the blur's sigma, e.g. 0.1,2.0.
    blur_sigma: Union[list[float], None] = None
    #: Probability of solarizing (inverting intensities at or above 0.5; BYOL).
    solarize_p: Union[float, None] = None
    #: RandAugment operations per image, FixMatch's list and ranges (0 = none; FixMatch: 2).
    randaugment_n: Union[int, None] = None
    #: Largest Cutout square, as a fraction of the image side (0 = none; FixMatch: 0.5).
    cutout: Union[float, None] = None
    #: Probability of replacing an image by its Sobel edge magnitude (SimCLR's Figure 5 op).
    sobel_p: Union[float, None] = None
    #: Probability of adding Gaussian noise ...
    noise_p: Union[float, None] = None
    #: ... whose std is drawn per image uniformly in [0, noise_std] (intensities in [0, 1]).
    noise_std: Union[float, None] = None
    #: Probability of rotating by 90, 180 or 270 degrees (one of the three, uniformly).
    rotate_p: Union[float, None] = None
    #: 'identity': the second view is the image itself, only normalised; the first view
    #: alone is augmented (SimCLR's Figure 5 setting). 'same': both views alike.
    second_view: Union[Literal["same", "identity"], None] = None
    #: Per-channel normalisation mean; None = the training split's own.
    mean: Union[list[float], None] = None
    #: Per-channel normalisation std; None = the training split's own.
    std: Union[list[float], None] = None


@dataclass
class ModelConfig:
    """The encoder and its projection head."""

    #: A registered backbone: preact_resnet8/20/26/56, resnet18, resnet34, resnet50,
    #: mobilenet_v2.
    backbone: str = "preact_resnet26"
    #: Width multiplier: whole numbers for the pre-activation ResNets (16/32/64 x width
    #: channels), any positive value for mobilenet_v2 (e.g. 0.5), 1 for the ResNets.
    width: float = 1
    #: First layers: 'cifar' (3x3 stride-1 convolution, no max-pool: for 32x32 images)
    #: or 'imagenet' (torchvision's downsampling stem, as seeds 001, 003 and 004 ran it).
    stem: Literal["cifar", "imagenet"] = "cifar"
    #: Head layer sizes after the encoder's features: [64, 32] makes seed 000's
    #: 64-64-32 head on a 64-d encoder; the SimCLR paper uses [2048, 128]; [128] is a
    #: linear head and [] none (the loss on the features themselves).
    head_dims: list[int] = field(default_factory=lambda: [512, 128])
    #: BatchNorm after each hidden layer of the head (the paper's head).
    head_bn: bool = True
    #: Start the backbone from another run's encoder: a run directory (its newest
    #: checkpoint) or a checkpoint file. None = random initialisation.
    init: Union[str, None] = None


@dataclass
class MethodConfig:
    """The training method and its loss settings."""

    #: A registered method (see ``selfsup.methods.METHODS``).
    name: str = "simclr"
    #: Softmax temperature of the contrastive loss (SimCLR, MoCo; NT-Logistic's too).
    temperature: float = 0.2
    #: SimCLR's loss: 'nt-xent' (the paper's), the two it compares with in its Table 2,
    #: or 'dcl' (NT-Xent without the positive in the denominator; Yeh et al. 2022).
    loss: Literal["nt-xent", "nt-logistic", "margin-triplet", "dcl"] = "nt-xent"
    #: Margin of the margin triplet loss, on cosine similarities.
    margin: float = 0.5
    #: NT-Logistic, margin triplet: semi-hard negatives only (SimCLR's Table 4 "sh" rows).
    semi_hard: bool = False
    #: MoCo: number of negative keys in the queue.
    queue_size: int = 4096
    #: EMA decay of the key / target / teacher encoder: MoCo's constant momentum, and the
    #: start of the cosine schedule towards 1 of BYOL and DINO (papers: 0.996; CIFAR: 0.99).
    momentum: float = 0.99
    #: MoCo: BatchNorm sub-batches that stand in for GPUs in shuffle-BN (1 = plain BN).
    bn_splits: int = 8
    #: BYOL, SimSiam: hidden size of the predictor MLP (BYOL: 4096; SimSiam: 512).
    predictor_hidden: int = 512
    #: BYOL, SimSiam: the predictor's learning rate as a multiple of the others' (Tian et al.
    #: 2021, "Understanding self-supervised learning dynamics without contrastive pairs",
    #: find the predictor's relative rate decides how fast these methods start).
    predictor_lr: float = 1.0
    #: BYOL, SimSiam: keep the predictor at its peak learning rate, without warm-up or decay
    #: (SimSiam's paper and code: "fix_pred_lr", slightly better in its Table).
    predictor_fixed_lr: bool = False
    #: BYOL, SimSiam: pass each view through the networks on its own, so that BatchNorm
    #: normalises each view over its own batch, as the papers' code does (BYOL's and
    #: SimSiam's forward the two views separately); false: both views in one pass, BatchNorm
    #: over all 2B of them (one larger batch, a little faster on a CPU).
    bn_per_view: bool = False
    #: Barlow Twins: weight of the off-diagonal (redundancy) term (the paper: 5e-3).
    lambd: float = 0.005
    #: VICReg: weights of invariance, variance and covariance (the paper: 25, 25, 1).
    vicreg_weights: list[float] = field(default_factory=lambda: [25.0, 25.0, 1.0])
    #: DINO: outputs of the head's last layer (the paper: 65536; CIFAR setups: 4096).
    out_dim: int = 4096
    #: DINO: student temperature.
    student_temp: float = 0.1
    #: DINO: teacher temperature after the warm-up ...
    teacher_temp: float = 0.07
    #: ... at the start of it ...
    teacher_temp_start: float = 0.04
    #: ... and its length in epochs (0 = none).
    teacher_temp_warmup: float = 30.0
    #: DINO: EMA decay of the teacher's output centre.
    center_momentum: float = 0.9
    #: DINO: small crops (area 5-40 %, same resolution) seen by the student only, beside the two global crops.
    local_crops: int = 0
    #: DINO: fix the norm of each output's weight vector at 1 (the paper's norm_last_layer);
    #: false lets it grow, so the logits, bounded by 1 / temperature otherwise, can sharpen.
    norm_last_layer: bool = True


@dataclass
class SemiConfig:
    """Semi-supervised training with few labels (``selfsup semi``)."""

    #: Number of labelled images, a class-balanced subset chosen by train.seed. The other
    #: images of the training split are used without their labels.
    labels: Union[int, None] = None
    #: Labelled images per step, in addition to train.batch_size unlabelled ones.
    labeled_batch_size: int = 32
    #: Maximum weight of the consistency cost (MSE between softmax outputs).
    consistency_weight: float = 100.0
    #: Epochs of the sigmoid ramp-up exp(-5 (1 - t)^2) of the consistency weight.
    rampup_epochs: float = 5.0
    #: Mean Teacher: EMA decay of the teacher after the ramp-up; FixMatch: of the evaluated weights ...
    ema_decay: float = 0.999
    #: ... and during it.
    ema_decay_rampup: float = 0.99
    #: FixMatch: confidence a pseudo-label needs.
    threshold: float = 0.95
    #: FixMatch: weight lambda_u of the unlabelled loss.
    unlabeled_weight: float = 1.0


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule."""

    #: 'lars', 'sgd', 'adam' or 'adamw'.
    name: Literal["lars", "sgd", "adam", "adamw"] = "lars"
    #: Learning rate for a batch of 256; scaled by ``lr_scaling``.
    lr: float = 1.0
    #: 'linear' (lr * batch / 256), 'sqrt' (lr * sqrt(batch / 256)) or 'none'.
    lr_scaling: Literal["linear", "sqrt", "none"] = "linear"
    #: Momentum of SGD and LARS (Adam's beta1 stays 0.9).
    momentum: float = 0.9
    #: Nesterov momentum for SGD (Mean Teacher's paper uses it; MoCo's does not).
    nesterov: bool = False
    #: L2 weight decay (LARS and SGD skip BatchNorm and bias parameters).
    weight_decay: float = 1e-6
    #: LARS trust coefficient (eta).
    trust_coefficient: float = 0.001
    #: Linear warm-up, in epochs (fractions allowed), then the schedule.
    warmup_epochs: float = 1.0
    #: 'cosine' (decay to 0 after warm-up), 'constant', or 'step' (x0.1 at 60 % and 80 % of
    #: the run: MoCo v1's, before MoCo v2 made it cosine).
    schedule: Literal["cosine", "constant", "step"] = "cosine"


@dataclass
class TrainConfig:
    """The training loop."""

    #: Passes over the training images.
    epochs: int = 100
    #: Train for this many minutes instead of train.epochs: the steps that fit are planned
    #: from measured step times and every schedule ends with the budget (evaluation not
    #: included); the plan is saved in RUN_DIR/plan.json for --resume.
    time_budget: Union[float, None] = None
    #: Wall-clock minutes this machine trains per minute of ``train.time_budget``: a table
    #: whose budget was set for one machine continues on a slower one at equal steps
    #: (e.g. 1.5 where the bare step runs at two thirds of that machine's views/s; see
    #: ``selfsup sweep --budget-scale``). Recorded with the run, not part of what it computes.
    budget_scale: float = field(default=1.0, metadata=FREE)
    #: With train.time_budget: re-plan the remaining steps from the measured step time
    #: about 20 times in a run (each re-plan saved with a checkpoint), so the budget holds
    #: when the machine gets slower or faster; false keeps the first plan.
    replan: bool = True
    #: Images per step (SimCLR sees two views of each).
    batch_size: int = 256
    #: Progressive resizing: views of this side in pixels for the first
    #: ``train.low_res_until`` of the steps, full-size views after (0 = always full size).
    #: Early steps get cheaper (24 px: 0.56 of the pixels); the network ends on the size it
    #: is evaluated at (FixRes, Touvron et al. 2019; FFCV's progressive resizing).
    low_res: int = 0
    #: Fraction of the run's steps trained at ``train.low_res``.
    low_res_until: float = 0.5
    #: Seeds the model, the data order and every augmentation (a function of seed and step).
    seed: int = 0
    #: 'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.
    device: str = field(default="auto", metadata=FREE)
    #: 'auto' (bf16 autocast where the device computes bf16 natively: CUDA, and CPUs
    #: with AVX512-BF16 or AMX), 'bf16' or 'fp32'.
    precision: Literal["auto", "bf16", "fp32"] = field(default="auto", metadata=FREE)
    #: Feed images in channels_last memory format (faster convolutions).
    channels_last: bool = True
    #: torch.compile the model, and on a GPU the augmentation too (pays on GPUs; costs start-up time).
    compile: bool = field(default=False, metadata=FREE)
    #: torch.compile mode: 'default', 'reduce-overhead' (CUDA graphs) or 'max-autotune'.
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = field(default="default", metadata=FREE)
    #: Under torchrun on GPUs: BatchNorm statistics over the whole global batch.
    sync_bn: bool = field(default=False, metadata=FREE)
    #: CPU threads for PyTorch (None = PyTorch's default).
    num_threads: Union[int, None] = field(default=None, metadata=FREE)
    #: Keep the checkpoint of every N-th epoch for 'selfsup eval --milestones' (seed 000:
    #: 40); 0 = none. A rolling checkpoint is written at the end of every epoch anyway.
    checkpoint_every: int = field(default=0, metadata=FREE)
    #: Also save one when this many minutes passed since the last (0 = never).
    checkpoint_minutes: float = field(default=10.0, metadata=FREE)
    #: How many rolling checkpoints to keep (older ones are deleted; milestones stay).
    keep_checkpoints: int = field(default=2, metadata=FREE)
    #: Run the kNN monitor every N epochs (0 = never).
    knn_every: int = field(default=0, metadata=FREE)
    #: Log (and read the loss back from the device) every N steps.
    log_every: int = field(default=10, metadata=FREE)
    #: Show a progress bar.
    progress: bool = field(default=True, metadata=FREE)
    #: Evaluate (kNN and linear probe) when pretraining ends.
    eval_after: bool = field(default=True, metadata=FREE)


@dataclass
class EvalConfig:
    """Evaluation of a frozen encoder: weighted kNN and a linear probe on its features."""

    #: Neighbours of the weighted kNN classifier (k=200 as in InstDisc and SimCLR code).
    knn_k: int = 200
    #: Temperature of the kNN weights exp(similarity / t).
    knn_temperature: float = 0.1
    #: Linear probe optimizer on the cached features: 'adam' or 'sgd'.
    linear_optimizer: Literal["adam", "sgd"] = "adam"
    #: Learning rate of the linear probe.
    linear_lr: float = 1e-3
    #: Epochs of the linear probe over the cached features.
    linear_epochs: int = 30
    #: Batch size of the linear probe.
    linear_batch_size: int = 256
    #: Weight decay of the linear probe.
    linear_weight_decay: float = 0.0
    #: Images per forward pass when extracting features.
    batch_size: int = 256
    #: Use only a class-balanced subset of the training split as kNN bank / probe data.
    train_subset: Union[int, None] = None
    #: Size of the kNN monitor's bank (training images) during training ...
    monitor_train: int = 5000
    #: ... and of its query set (test images).
    monitor_test: int = 1000


@dataclass
class FinetuneConfig:
    """Fine-tuning an encoder with few labels (``selfsup finetune``)."""

    #: Labelled training images (class-balanced, chosen by ``seed``); one fine-tuning
    #: per entry, e.g. seed 001's [300, 500, 1000, 1500].
    labels: list[int] = field(default_factory=lambda: [1000])
    #: Validation images (class-balanced, from the rest of the training split) used
    #: to keep the epoch with the lowest validation loss.
    val_size: int = 500
    #: Passes over the labelled images.
    epochs: int = 50
    #: Labelled images per step.
    batch_size: int = 64
    #: 'sgd' (momentum 0.9, nesterov) or 'adam'; cosine decay over all steps.
    optimizer: Literal["sgd", "adam"] = "sgd"
    #: Learning rate (no batch scaling).
    lr: float = 0.05
    #: Weight decay of every parameter.
    weight_decay: float = 5e-4
    #: Train only the new linear head (linear evaluation with augmentation).
    freeze_encoder: bool = False
    #: Multiplier of the encoder's learning rate (the head's is ``lr``); below 1 keeps a
    #: pretrained encoder closer to where it started.
    encoder_lr: float = 1.0
    #: First train the head alone for this many epochs (encoder frozen, its BatchNorm
    #: statistics kept), then every layer: LP-FT (Kumar et al. 2022), which keeps a
    #: randomly initialised head from distorting pretrained features. Counted in ``epochs``.
    head_epochs: int = 0
    #: Start from a randomly initialised encoder instead (the "from scratch" reference).
    from_scratch: bool = False
    #: Train each fine-tuning for this many minutes instead of ``epochs`` epochs (the
    #: steps that fit, planned and re-planned as ``train.time_budget`` does; None = epochs).
    time_budget: Union[float, None] = None

    #: Augmentation preset of the labelled images.
    preset: str = "supervised"
    #: Chooses the labelled and validation images, the head's initialisation and the order.
    seed: int = 0


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
def field_types(section: str) -> Mapping[str, Any]:
    """Resolved type hints of a section's fields (read-only).

    Cached: resolving the string annotations is slow (``typing.get_type_hints`` compiles
    each one), and every override, copy and check of a config asks again; a sweep's plan
    asked ~13,000 times.
    """
    return types.MappingProxyType(typing.get_type_hints(SECTIONS[section]))


def all_keys() -> list[str]:
    """Every dotted key, e.g. ``['data.name', 'data.subset', ...]``."""
    return [f"{s}.{k}" for s in SECTIONS for k in field_types(s)]


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


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
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [yaml.safe_load(v) for v in value.strip("[]").split(",") if v.strip()]
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]  # a single value where a list is expected: a list of one
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")

        return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
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

    Args:
        raw: ``{section: {key: value}}``; missing keys keep their defaults.
        source: Shown in error messages (e.g. the YAML file's path).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (data, model, ...)")
    cfg = Config()
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown section '{section}'{_suggest(str(section), list(SECTIONS))}")
        _check_section_dict(section, values, source)
        types_ = field_types(section)
        obj = getattr(cfg, section)
        for key, value in (values or {}).items():
            setattr(obj, key, coerce(value, types_[key], f"{source}: {section}.{key}"))
    validate(cfg)
    return cfg


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
    """Return a copy of ``cfg`` with dotted keys replaced (``{"method.temperature": 0.1}``)."""
    out = copy_config(cfg)
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or key not in field_types(section):
            raise ConfigError(f"{source}: unknown config key '{dotted}'{_suggest(dotted, all_keys())}")
        if isinstance(value, str):
            try:
                parsed = yaml.safe_load(value) if value.strip() else value
            except yaml.YAMLError:  # not YAML ('@encoder', 'a: b: c'): the string itself
                parsed = value
            # Keep strings that YAML would turn into something else for str fields.
            value = value if field_types(section)[key] is str else parsed
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
    """Nested plain dicts (YAML- and JSON-safe)."""
    return dataclasses.asdict(cfg)


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
    """Dotted keys marked on their field as free to change on ``--resume`` (see :data:`FREE`)."""
    return {f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls) if f.metadata.get("resume")}


def field_help(section: str) -> dict[str, str]:
    """Each field's ``#:`` comment in this file, as one line: the flags' ``--help`` text."""
    import inspect

    out: dict[str, str] = {}
    doc: list[str] = []
    for line in inspect.getsource(SECTIONS[section]).splitlines()[1:]:
        text = line.strip()
        if text.startswith("#:"):
            doc.append(text[2:].strip())
            continue
        name = text.partition(":")[0]
        if line.startswith("    ") and not line.startswith("     ") and name.isidentifier() and ":" in text:
            out[name] = " ".join(doc)
        doc = []
    return out


def validate(cfg: Config) -> None:
    """Range checks that need no data or registry; raises :class:`ConfigError`."""

    # long: one line per range check, in section order; split up they would be harder to scan.
    def need(ok: bool, key: str, why: str) -> None:
        if not ok:
            section, name = key.split(".")
            value = getattr(getattr(cfg, section), name)
            raise ConfigError(f"{key} {why}, got {value!r}")

    for section in SECTIONS:
        for key, tp in field_types(section).items():
            allowed = choices(tp)
            value = getattr(getattr(cfg, section), key)
            if allowed is not None and value is not None and value not in allowed:
                raise ConfigError(f"{section}.{key} must be one of {', '.join(map(str, allowed))}, got {value!r}")
    t, o, e, d, m = cfg.train, cfg.optim, cfg.eval, cfg.data, cfg.method
    need(cfg.data.max_file_mb > 0, "data.max_file_mb", "must be positive (megabytes)")
    need(t.batch_size >= 2, "train.batch_size", "must be at least 2 (batch statistics)")
    need(t.epochs > 0, "train.epochs", "must be a positive integer")
    need(t.time_budget is None or t.time_budget > 0, "train.time_budget", "must be positive (minutes)")
    need(t.budget_scale > 0, "train.budget_scale", "must be positive (wall minutes per budget minute)")
    need(t.low_res == 0 or t.low_res >= 8, "train.low_res", "must be 0 (off) or at least 8 pixels")
    need(0 <= t.low_res_until <= 1, "train.low_res_until", "must be a fraction of the run, in [0, 1]")
    need(t.checkpoint_every >= 0, "train.checkpoint_every", "must not be negative")
    need(t.checkpoint_minutes >= 0, "train.checkpoint_minutes", "must not be negative")
    need(t.keep_checkpoints > 0, "train.keep_checkpoints", "must be a positive integer")
    need(t.knn_every >= 0, "train.knn_every", "must not be negative")
    need(t.log_every > 0, "train.log_every", "must be a positive integer")
    need(t.num_threads is None or t.num_threads > 0, "train.num_threads", "must be positive")

    need(o.lr > 0, "optim.lr", "must be positive")
    need(o.warmup_epochs >= 0, "optim.warmup_epochs", "must not be negative")
    need(o.weight_decay >= 0, "optim.weight_decay", "must not be negative")
    need(0 <= o.momentum < 1, "optim.momentum", "must lie in [0, 1)")
    need(o.trust_coefficient > 0, "optim.trust_coefficient", "must be positive")
    need(m.temperature > 0, "method.temperature", "must be positive")
    need(m.margin > 0, "method.margin", "must be positive")
    need(m.queue_size > 0, "method.queue_size", "must be a positive integer")
    need(0 <= m.momentum < 1, "method.momentum", "must lie in [0, 1)")
    need(m.bn_splits > 0, "method.bn_splits", "must be a positive integer")
    need(m.predictor_hidden > 0 and m.out_dim > 0, "method.predictor_hidden", "and out_dim must be positive")
    need(m.predictor_lr > 0, "method.predictor_lr", "must be positive")
    need(m.lambd >= 0, "method.lambd", "must not be negative")
    need(len(m.vicreg_weights) == 3 and min(m.vicreg_weights) >= 0, "method.vicreg_weights",
         "needs three weights, none negative")  # fmt: skip
    need(min(m.student_temp, m.teacher_temp, m.teacher_temp_start) > 0, "method.teacher_temp",
         "and the other DINO temperatures must be positive")  # fmt: skip
    need(0 <= m.center_momentum < 1, "method.center_momentum", "must lie in [0, 1)")
    need(m.local_crops >= 0 and m.teacher_temp_warmup >= 0, "method.local_crops", "must not be negative")
    s, f = cfg.semi, cfg.finetune
    need(s.labels is None or s.labels > 0, "semi.labels", "must be a positive integer")
    need(s.labeled_batch_size > 0, "semi.labeled_batch_size", "must be a positive integer")
    need(s.consistency_weight >= 0, "semi.consistency_weight", "must not be negative")
    need(s.rampup_epochs >= 0, "semi.rampup_epochs", "must not be negative")
    need(0 <= s.ema_decay < 1, "semi.ema_decay", "must lie in [0, 1)")
    need(0 <= s.ema_decay_rampup < 1, "semi.ema_decay_rampup", "must lie in [0, 1)")
    need(len(f.labels) > 0 and min(f.labels) > 0, "finetune.labels", "must be positive integers")

    need(f.val_size > 0, "finetune.val_size", "must be a positive integer")
    need(f.epochs > 0, "finetune.epochs", "must be a positive integer")
    need(f.batch_size > 1, "finetune.batch_size", "must be at least 2")
    need(f.lr > 0, "finetune.lr", "must be positive")
    need(f.time_budget is None or f.time_budget > 0, "finetune.time_budget", "must be positive (minutes)")
    need(f.weight_decay >= 0, "finetune.weight_decay", "must not be negative")
    need(f.encoder_lr >= 0, "finetune.encoder_lr", "must not be negative")
    need(0 <= f.head_epochs < f.epochs, "finetune.head_epochs", "must lie in [0, finetune.epochs)")
    need(d.subset is None or d.subset > 0, "data.subset", "must be a positive integer")
    need(d.image_size >= 8, "data.image_size", "must be at least 8")
    need(0 < d.test_fraction < 1, "data.test_fraction", "must lie in (0, 1)")
    need(e.knn_k > 0, "eval.knn_k", "must be a positive integer")
    need(e.knn_temperature > 0, "eval.knn_temperature", "must be positive")
    need(e.linear_lr > 0, "eval.linear_lr", "must be positive")
    need(e.linear_epochs > 0, "eval.linear_epochs", "must be a positive integer")
    need(e.linear_batch_size > 0, "eval.linear_batch_size", "must be a positive integer")
    need(e.batch_size > 0, "eval.batch_size", "must be a positive integer")
    need(e.train_subset is None or e.train_subset > 0, "eval.train_subset", "must be positive")
    need(e.monitor_train > 0 and e.monitor_test > 0, "eval.monitor_train", "must be positive")
    need(cfg.model.width > 0, "model.width", "must be positive")
    need(all(x > 0 for x in cfg.model.head_dims), "model.head_dims", "sizes must be positive")
