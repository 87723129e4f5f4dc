"""Augmentation presets and settings: what each recipe's views draw from.

:data:`PRESETS` holds the values of each named pipeline (SimCLR's CIFAR augmentation,
seed 000's, MoCo v2's, ...); :func:`resolve_augment` fills a run's unset fields from its
preset and checks their ranges; :class:`AugmentSpec` is the resolved, typed form the
sampler reads; :func:`view_configs` gives each view of a method its own changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from ..config import AugmentConfig
from ..errors import ConfigError

_COMMON = dict(
    crop_ratio=[3 / 4, 4 / 3],
    pad=0,
    flip_p=0.5,
    blur_kernel=0,
    blur_sigma=[0.1, 2.0],
    solarize_p=0.0,
    randaugment_n=0,
    cutout=0.0,
    sobel_p=0.0,
    noise_p=0.0,
    noise_std=0.1,
    rotate_p=0.0,
    second_view="same",
)
_NO_COLOUR = dict(jitter_strength=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)

#: Named recipes: every AugmentConfig field but preset, mean and std. Values a config
#: leaves unset come from its preset.
PRESETS: dict[str, dict[str, Any]] = {
    # SimCLR for CIFAR (paper appendix B.9): crop 0.08-1, flip, colour jitter of
    # strength s=0.5 with p=0.8, grayscale p=0.2, no blur.
    "simclr": {
        **_COMMON,
        "crop": "resized",
        "crop_scale": [0.08, 1.0],
        "jitter_strength": 0.5,
        "jitter_p": 0.8,
        "grayscale_p": 0.2,
        "blur_p": 0.0,
    },
    # Seed 000: the same, plus GaussianBlur(kernel = image size // 10, odd: 3) with p=0.5.
    "seed000": {
        **_COMMON,
        "crop": "resized",
        "crop_scale": [0.08, 1.0],
        "jitter_strength": 0.5,
        "jitter_p": 0.8,
        "grayscale_p": 0.2,
        "blur_p": 0.5,
    },
    # MoCo v2: crop 0.2-1, jitter (0.4, 0.4, 0.4, 0.1) p=0.8, grayscale 0.2, blur p=0.5.
    "moco_v2": {
        **_COMMON,
        "crop": "resized",
        "crop_scale": [0.2, 1.0],
        "jitter_strength": 0.5,
        "jitter_p": 0.8,
        "grayscale_p": 0.2,
        "blur_p": 0.5,
    },
    # Standard supervised CIFAR: translate by up to 4 px (reflect padding), flip.
    "supervised": {**_COMMON, **_NO_COLOUR, "crop": "pad", "crop_scale": [1.0, 1.0], "pad": 4},
    # Pi-model / Mean Teacher: translate by up to 2 px, flip.
    "weak": {**_COMMON, **_NO_COLOUR, "crop": "pad", "crop_scale": [1.0, 1.0], "pad": 2},
    # Evaluation: no augmentation, only normalisation.
    "none": {**_COMMON, **_NO_COLOUR, "crop": "none", "crop_scale": [1.0, 1.0], "flip_p": 0.0},
}


@dataclass(frozen=True)
class AugmentSpec:
    """A fully resolved augmentation, what the ops consume (see :class:`AugmentConfig`)."""

    crop: str
    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float]
    pad: int
    flip_p: float
    jitter_strength: float
    jitter_p: float
    grayscale_p: float
    blur_p: float
    blur_kernel: int
    blur_sigma: tuple[float, float]
    solarize_p: float
    randaugment_n: int
    cutout: float
    sobel_p: float
    noise_p: float
    noise_std: float
    rotate_p: float
    second_view: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_config(cls, cfg: AugmentConfig) -> AugmentSpec:
        """From a resolved config; ``ValueError`` if any value is still unset."""
        values = {f.name: getattr(cfg, f.name) for f in fields(cls)}
        unset = [k for k, v in values.items() if v is None]
        if unset:
            raise ValueError(f"augmentation not resolved (resolve_augment, mean/std from data): {unset}")
        for k, v in values.items():
            if isinstance(v, list):
                values[k] = tuple(v)
        return cls(**values)


def resolve_augment(cfg: AugmentConfig, default_preset: str) -> AugmentConfig:
    """Fill every unset field of ``cfg`` from its preset (or ``default_preset``).

    Args:
        cfg: A possibly partial config; ``None`` fields are unset.
        default_preset: The preset used when ``cfg.preset`` is unset (the method's).

    Returns:
        A new config with every field set except ``mean``/``std`` (taken from the data).

    Raises:
        ConfigError: If the preset is unknown or a resolved value is out of range.
    """
    name = cfg.preset or default_preset
    if name not in PRESETS:
        raise ConfigError(f"unknown augment.preset {name!r}; known: {', '.join(PRESETS)}")
    values = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    for key, value in PRESETS[name].items():
        if values[key] is None:
            values[key] = value
    values["preset"] = name
    out = AugmentConfig(**values)
    _check(out)
    return out


def _check(c: AugmentConfig) -> None:
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"augment.{key}: {why}, got {getattr(c, key)!r}")

    # Everything but mean/std is set once resolved; a spec spells that out for type checkers.
    cfg = AugmentSpec.from_config(replace(c, mean=c.mean or [0.0] * 3, std=c.std or [1.0] * 3))
    if cfg.crop not in ("resized", "pad", "none"):
        raise bad("crop", "must be 'resized', 'pad' or 'none'")
    for key in ("crop_scale", "crop_ratio", "blur_sigma"):
        pair = getattr(cfg, key)
        if len(pair) != 2 or not 0 < pair[0] <= pair[1]:
            raise bad(key, "must be two positive numbers [low, high] with low <= high")
    if cfg.crop_scale[1] > 1:
        raise bad("crop_scale", "the largest crop area is 1.0 (the whole image)")
    if cfg.crop == "resized" and cfg.crop_scale[0] >= 1:  # e.g. crop: resized over preset none's [1, 1]
        raise bad("crop_scale", "with crop 'resized' every crop would be the whole image; give a smaller low end")
    for key in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p", "sobel_p", "noise_p", "rotate_p"):
        if not 0 <= getattr(cfg, key) <= 1:
            raise bad(key, "a probability must lie in [0, 1]")
    if cfg.randaugment_n < 0 or not 0 <= cfg.cutout <= 1:
        key = "randaugment_n" if cfg.randaugment_n < 0 else "cutout"
        raise bad(key, "must not be negative (and cutout at most 1)")
    if cfg.noise_std < 0:
        raise bad("noise_std", "must not be negative")
    if cfg.second_view not in ("same", "identity"):
        raise bad("second_view", "must be 'same' or 'identity'")
    if cfg.jitter_strength < 0 or cfg.pad < 0:
        raise bad("jitter_strength" if cfg.jitter_strength < 0 else "pad", "must not be negative")
    if cfg.blur_kernel < 0 or (cfg.blur_kernel > 0 and cfg.blur_kernel % 2 == 0):
        raise bad("blur_kernel", "must be a positive odd integer (or 0: image size // 10, made odd)")
    for key in ("mean", "std"):
        if len(getattr(cfg, key)) != 3:
            raise bad(key, "needs three values (R, G, B)")
    if min(cfg.std) <= 0:
        raise bad("std", "values must be positive")


def view_configs(cfg: AugmentConfig, per_view: Sequence[dict[str, Any]], n_views: int) -> list[AugmentConfig]:
    """One resolved augmentation per view: ``cfg`` with each view's own changes on top.

    With ``second_view: identity`` every view after the first is the image itself, only
    normalised (SimCLR's Figure 5 setting).

    Args:
        cfg: The resolved augmentation (preset and ``augment.*`` keys applied).
        per_view: A method's changes per view (e.g. BYOL's solarize 0.0 / 0.2), one
            mapping of AugmentConfig fields per view; empty: all alike.
        n_views: Views per image.

    Raises:
        ConfigError: If ``per_view`` does not have one entry per view, or a value is bad.
    """
    if not per_view:
        out = [cfg] * n_views
    elif len(per_view) != n_views:
        raise ConfigError(f"a method with {n_views} views needs {n_views} per-view augmentations, not {len(per_view)}")
    else:
        out = [replace(cfg, **changes) for changes in per_view]
        for view in out:
            _check(view)
    if cfg.second_view == "identity" and n_views > 1:
        # SimCLR's Figure 5: the transformations act on one branch; the other sees the image.
        out = [out[0], *[replace(cfg, **PRESETS["none"], preset="none")] * (n_views - 1)]
    return out
