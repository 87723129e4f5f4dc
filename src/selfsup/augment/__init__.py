"""Batch augmentation on the training device, with independent random parameters per sample.

The usual torchvision pipeline augments one PIL image at a time in DataLoader workers;
here a whole batch of uint8 images is augmented at once on the device that trains:

1. :func:`sample_params` draws every random parameter for every sample (crop box, flip,
   jitter factors and order, grayscale, blur sigma) with a CPU :class:`torch.Generator`.
   The arrays are tiny, drawing them on the host costs nothing and never waits for the
   GPU, and a seed gives the same augmentations on every device.
2. :func:`apply_params` runs the ops on the device: one ``grid_sample`` does crop,
   resize, flip and translation together; colour jitter, grayscale and blur follow; the
   result is normalised and returned in channels_last layout.

The distributions follow torchvision's ``RandomResizedCrop``, ``RandomHorizontalFlip``,
``RandomApply([ColorJitter], p)``, ``RandomGrayscale`` and ``GaussianBlur`` (tests compare
them). Presets for the recipes live in :data:`PRESETS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from itertools import permutations
from typing import Any

import torch
import torch.nn.functional as F

from ..config import AugmentConfig
from ..errors import ConfigError

# Luma weights of torchvision's rgb_to_grayscale (ITU-R 601-2).
_GRAY = (0.2989, 0.587, 0.114)

#: Colour-jitter op ids, in the order of their factors in ``AugmentParams.jitter``.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3

_COMMON = dict(
    crop_ratio=[3 / 4, 4 / 3], pad=0, flip_p=0.5, blur_kernel=0, blur_sigma=[0.1, 2.0], solarize_p=0.0,
    randaugment_n=0, cutout=0.0, sobel_p=0.0, noise_p=0.0, noise_std=0.1, rotate_p=0.0, second_view="same",
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


@dataclass
class AugmentParams:
    """Random parameters for a batch of ``B`` samples (all CPU tensors).

    Attributes:
        theta: (B, 2, 3) affine maps from output to input coordinates (crop, flip, shift).
        crop_area: (B,) crop area as a fraction of the image (1 for pad/none).
        crop_aspect: (B,) crop width / height in pixels.
        flip: (B,) bool, horizontally flipped.
        jitter: (B, 4) brightness, contrast, saturation factors and hue shift; identity
            values (1, 1, 1, 0) where jitter is not applied.
        jitter_applied: (B,) bool.
        jitter_order: (B, 4) permutation of op ids per sample (torchvision's random order).
        gray: (B,) bool.
        blur_sigma: (B,) sigma, 0 where no blur is applied.
        solarize: (B,) bool: intensities at or above 0.5 are inverted (BYOL's solarize).
        randaugment: RandAugment's operations, magnitudes and Cutout squares, or None.
        sobel: (B,) bool: replaced by the Sobel edge magnitude.
        noise: (B, 3, H, W) Gaussian noise to add (each image's own std), or None.
        rotate: (B,) int64 quarter turns (0 = none, 1 = 90 degrees counter-clockwise...).
    """

    theta: torch.Tensor
    crop_area: torch.Tensor
    crop_aspect: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    jitter_applied: torch.Tensor
    jitter_order: torch.Tensor
    gray: torch.Tensor
    blur_sigma: torch.Tensor
    solarize: torch.Tensor
    randaugment: Any = None
    sobel: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    rotate: torch.Tensor | None = None

    def select(self, rows: torch.Tensor) -> AugmentParams:
        """The parameters of the given samples (a CPU index tensor)."""
        picked: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or isinstance(value, torch.Tensor):
                picked[f.name] = None if value is None else value[rows]
            else:
                picked[f.name] = value.select(rows)
        return AugmentParams(**picked)


def _uniform(lo: float, hi: float, n: int, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    gen: torch.Generator,
    attempts: int = 10,
) -> torch.Tensor:
    """Crop boxes with torchvision's ``RandomResizedCrop.get_params`` distribution.

    Each sample tries up to ``attempts`` (area, log-aspect) draws and keeps the first box
    that fits; samples with none fall back to the central crop with the aspect clamped.

    Returns:
        (n, 4) int64 tensor of (top, left, crop_height, crop_width).
    """
    area = height * width
    target = area * _uniform(scale[0], scale[1], n * attempts, gen).view(n, attempts)
    log_r = _uniform(math.log(ratio[0]), math.log(ratio[1]), n * attempts, gen)
    aspect = torch.exp(log_r).view(n, attempts)
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    rows = torch.arange(n)
    hh, ww = h[rows, first.clamp(min=0)], w[rows, first.clamp(min=0)]
    # Fallback: central crop with the aspect ratio clamped into range (torchvision's).
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    fallback = first < 0
    hh = torch.where(fallback, fh, hh)
    ww = torch.where(fallback, fw, ww)
    # Offsets uniform over valid positions: randint(0, H - h + 1) per sample.
    u = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    top = torch.floor(u[:, 0] * (height - hh + 1)).long()
    left = torch.floor(u[:, 1] * (width - ww + 1)).long()
    top = torch.where(fallback, (height - fh) // 2, top)
    left = torch.where(fallback, (width - fw) // 2, left)
    return torch.stack([top, left, hh, ww], 1)


def _sample_jitter(cfg: AugmentSpec, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Colour-jitter factors (identity where not applied), whether applied, and each sample's op order."""
    s = cfg.jitter_strength
    strengths = (0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
    applied = (torch.rand(n, generator=gen) < cfg.jitter_p) & (s > 0)
    jitter = torch.empty(n, 4, dtype=torch.float64)
    for op, k in enumerate(strengths):
        if op == HUE:
            jitter[:, op] = _uniform(-min(k, 0.5), min(k, 0.5), n, gen)
        else:
            jitter[:, op] = _uniform(max(0.0, 1 - k), 1 + k, n, gen)
    identity = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    jitter = torch.where(applied[:, None], jitter, identity)
    order = torch.argsort(torch.rand(n, 4, generator=gen), dim=1)
    return jitter, applied, order


def _sample_figure5_ops(
    cfg: AugmentSpec, n: int, height: int, width: int, gen: torch.Generator
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Sobel, noise and rotation parameters (see :class:`AugmentParams`), None where unused.

    SimCLR's Figure 5 operations are drawn after everything else and only when used, so
    that every other augmentation draws exactly what it drew before they existed.
    """
    sobel = torch.rand(n, generator=gen) < cfg.sobel_p if cfg.sobel_p > 0 else None
    noise = None
    if cfg.noise_p > 0:
        noisy = torch.rand(n, generator=gen) < cfg.noise_p
        noise_sigma = torch.where(noisy, cfg.noise_std * torch.rand(n, generator=gen), torch.zeros(n))
        noise = torch.randn(n, 3, height, width, generator=gen) * noise_sigma.view(-1, 1, 1, 1)
    rotate = None
    if cfg.rotate_p > 0:
        if height != width:
            raise ConfigError(f"augment.rotate_p needs square images, got {height}x{width}")
        turned = torch.rand(n, generator=gen) < cfg.rotate_p
        rotate = torch.where(turned, torch.randint(1, 4, (n,), generator=gen), torch.zeros(n, dtype=torch.long))
    return sobel, noise, rotate


def sample_params(cfg: AugmentSpec, n: int, height: int, width: int, gen: torch.Generator) -> AugmentParams:
    """Draw the parameters of ``n`` independent augmentations (see :class:`AugmentParams`).

    Args:
        cfg: The augmentation.
        n: Number of samples.
        height: Input image height.
        width: Input image width.
        gen: CPU generator; the only source of randomness.
    """
    flip = torch.rand(n, generator=gen) < cfg.flip_p
    sign = 1.0 - 2.0 * flip.double()
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    if cfg.crop == "resized":
        top, left, h, w = sample_crop_boxes(n, height, width, cfg.crop_scale, cfg.crop_ratio, gen).T
        # Output normalised coord x_o in (-1, 1) maps to input x_i = a * x_o + t, where the
        # crop [left, left + w) spans the output: a = w / W, t = (2 left + w) / W - 1.
        theta[:, 0, 0] = sign * w / width
        theta[:, 0, 2] = (2 * left + w) / width - 1
        theta[:, 1, 1] = h / height
        theta[:, 1, 2] = (2 * top + h) / height - 1
        area, aspect = (h * w).double() / (height * width), w.double() / h.double()
    else:
        shift = torch.zeros(n, 2, dtype=torch.float64)
        if cfg.crop == "pad" and cfg.pad > 0:
            shift = torch.randint(-cfg.pad, cfg.pad + 1, (n, 2), generator=gen).double()
        # Integer shifts land output pixel centres on input pixel centres: an exact copy.
        theta[:, 0, 0] = sign
        theta[:, 0, 2] = 2 * shift[:, 1] / width
        theta[:, 1, 1] = 1
        theta[:, 1, 2] = 2 * shift[:, 0] / height
        area, aspect = torch.ones(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)

    jitter, applied, order = _sample_jitter(cfg, n, gen)
    gray = torch.rand(n, generator=gen) < cfg.grayscale_p
    blurred = torch.rand(n, generator=gen) < cfg.blur_p
    sigma = _uniform(cfg.blur_sigma[0], cfg.blur_sigma[1], n, gen)
    sigma = torch.where(blurred, sigma, torch.zeros_like(sigma))
    # Drawn last, and only when used, so that presets without it draw what they always drew.
    solarize = torch.rand(n, generator=gen) < cfg.solarize_p if cfg.solarize_p > 0 else torch.zeros(n, dtype=torch.bool)
    ra = None
    if cfg.randaugment_n > 0 or cfg.cutout > 0:  # FixMatch's strong view (drawn last, only when used)
        from .randaugment import sample as sample_randaugment

        ra = sample_randaugment(n, cfg.randaugment_n, cfg.cutout, height, width, gen)
    sobel, noise, rotate = _sample_figure5_ops(cfg, n, height, width, gen)
    return AugmentParams(
        theta=theta.float(),
        crop_area=area.float(),
        crop_aspect=aspect.float(),
        flip=flip,
        jitter=jitter.float(),
        jitter_applied=applied,
        jitter_order=order,
        gray=gray,
        blur_sigma=sigma.float(),
        solarize=solarize,
        randaugment=ra,
        sobel=sobel,
        noise=noise,
        rotate=rotate,
    )


# --------------------------------------------------------------------------------------
# Ops on float batches (B, 3, H, W) in [0, 1], each with per-sample factors of shape (B,).


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma, torchvision's weights."""
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _per_sample(f: torch.Tensor) -> torch.Tensor:
    return f.view(-1, 1, 1, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale intensities by ``factor`` (B,), clamped to [0, 1]."""
    return (x * _per_sample(factor)).clamp_(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its mean gray level by ``factor`` (B,)."""
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    f = _per_sample(factor)
    return (f * x + (1 - f) * mean).clamp_(0, 1)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its grayscale version by ``factor`` (B,)."""
    f = _per_sample(factor)
    return (f * x + (1 - f) * grayscale(x)).clamp_(0, 1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` (B,) turns in [-0.5, 0.5], keeping saturation and value.

    RGB -> (hue, chroma, value), shift hue, then back with the closed form
    ``channel_n = V - C * clamp(min(k, 4 - k), 0, 1)``, ``k = (n + 6 H) mod 6`` for
    n = 5, 3, 1 (R, G, B).
    """
    r, g, b = x.unbind(1)
    v, _ = x.max(1)
    c = v - x.min(1).values
    safe_c = torch.where(c > 0, c, torch.ones_like(c))
    # Hue in sextants [0, 6): which channel is the maximum decides the formula.
    h = torch.where(
        v == r,
        ((g - b) / safe_c) % 6,
        torch.where(v == g, (b - r) / safe_c + 2, (r - g) / safe_c + 4),
    )
    h = (h + 6 * shift.view(-1, 1, 1)) % 6
    out = []
    for n in (5.0, 3.0, 1.0):
        k = (n + h) % 6
        out.append(v - c * torch.minimum(k, 4 - k).clamp(0, 1))
    return torch.stack(out, 1)


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """Apply brightness/contrast/saturation/hue with each sample's own factors and order.

    Samples are grouped by their op order (at most 24 groups, found on the host), so
    every op runs once per jittered sample and nothing waits for the device.
    """
    applied = params.jitter_applied
    if not bool(applied.any()):
        return x
    # Ops whose factors are identity for every sample are skipped entirely.
    identity = torch.tensor([1.0, 1.0, 1.0, 0.0])
    active = [op for op in range(4) if bool((params.jitter[applied, op] != identity[op]).any())]
    order_key = params.jitter_order @ torch.tensor([64, 16, 4, 1])
    factors = params.jitter.to(x.device, non_blocking=True)
    out = x.clone()
    for perm in permutations(range(4)):
        key = perm[0] * 64 + perm[1] * 16 + perm[2] * 4 + perm[3]
        idx_cpu = torch.nonzero(applied & (order_key == key)).flatten()
        if idx_cpu.numel() == 0:
            continue
        idx = idx_cpu.to(x.device, non_blocking=True)
        y = x.index_select(0, idx)
        f = factors.index_select(0, idx)
        for op in perm:
            if op in active:
                y = _JITTER_OPS[op](y, f[:, op])
        out.index_copy_(0, idx, y)
    return out


def _gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """(B,) sigmas -> (B, size) normalised 1-D kernels; sigma 0 gives the identity kernel."""
    half = (size - 1) / 2
    t = torch.linspace(-half, half, size)
    safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
    k = torch.exp(-0.5 * (t[None, :] / safe[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)
    delta = (t == 0).float().expand_as(k)
    return torch.where((sigma > 0)[:, None], k, delta)


def blur_kernel_for(size: int) -> int:
    """Seed 000's blur kernel: ``size // 10`` made odd (``2 (size // 10 // 2) + 1``): 3 for 32 px.

    The report calls ``GaussianBlur(img_size[0] // 10)`` (10 % of the side, as the SimCLR
    paper's blur); its class is not shown, and OpenCV's blur it would call needs an odd
    kernel, which the PyTorch SimCLR reproductions of the time get as ``2 (k // 2) + 1``.
    """
    return 2 * (size // 10 // 2) + 1


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma (B,) (0 = unchanged), reflect padding."""
    b, ch, hgt, wid = x.shape
    k = _gaussian_kernels(sigma, kernel_size).to(x.device, x.dtype, non_blocking=True)
    k = k.repeat_interleave(ch, 0)  # one kernel per (sample, channel) group
    pad = kernel_size // 2
    y = x.reshape(1, b * ch, hgt, wid)
    y = F.conv2d(F.pad(y, (pad, pad, 0, 0), mode="reflect"), k.view(b * ch, 1, 1, -1), groups=b * ch)
    y = F.conv2d(F.pad(y, (0, 0, pad, pad), mode="reflect"), k.view(b * ch, 1, -1, 1), groups=b * ch)
    return y.view(b, ch, hgt, wid)


def solarize(x: torch.Tensor, applied: torch.Tensor, threshold: float | torch.Tensor = 0.5) -> torch.Tensor:
    """Invert intensities at or above ``threshold`` in the samples where ``applied`` (B,) is set.

    torchvision's ``solarize`` on float images, per sample; ``threshold`` is one value
    (BYOL: 0.5) or one per sample (B,) (RandAugment's Solarize).
    """
    if isinstance(threshold, torch.Tensor):
        threshold = threshold.view(-1, 1, 1, 1)
    flip = applied.view(-1, 1, 1, 1) & (x >= threshold)
    return torch.where(flip, 1.0 - x, x)


_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def sobel(x: torch.Tensor, applied: torch.Tensor) -> torch.Tensor:
    """Replace the samples where ``applied`` (B,) is set by their Sobel edge magnitude.

    The luma's horizontal and vertical Sobel responses (3x3, replicate padding) give
    ``sqrt(gx^2 + gy^2) / 4``, clamped to [0, 1] (4 is the largest response to a single
    step edge), copied into the three channels.
    """
    kx = torch.tensor(_SOBEL_X, device=x.device, dtype=x.dtype)
    kernels = torch.stack([kx, kx.T]).unsqueeze(1)  # (2, 1, 3, 3): d/dx, d/dy
    g = F.conv2d(F.pad(grayscale(x), (1, 1, 1, 1), mode="replicate"), kernels)
    edges = (g.square().sum(1, keepdim=True).sqrt() / 4).clamp(0, 1).expand_as(x)
    return torch.where(applied.view(-1, 1, 1, 1), edges, x)


def add_noise(x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``x + noise``, clamped to [0, 1]."""
    return (x + noise.to(x.device, x.dtype, non_blocking=True)).clamp(0, 1)


def rotate_quarters(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate each square image by ``turns`` (B,) quarter turns counter-clockwise (``torch.rot90``)."""
    out = x
    for k in (1, 2, 3):
        rows = torch.nonzero(turns == k).flatten()
        if rows.numel():
            idx = rows.to(x.device, non_blocking=True)
            if out is x:
                out = x.clone()
            out.index_copy_(0, idx, torch.rot90(x.index_select(0, idx), k, dims=(2, 3)))
    return out


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [0, 1] (a channels_last view)."""
    return images.permute(0, 3, 1, 2).float().div_(255)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` with ``mean``/``std`` of shape (3,)."""
    return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def apply_params(images: torch.Tensor, params: AugmentParams, cfg: AugmentSpec) -> torch.Tensor:
    """Augment a batch with the given parameters.

    Args:
        images: uint8 (B, H, W, 3) on the training device.
        params: From :func:`sample_params` with ``n == B``.
        cfg: The augmentation that produced ``params`` (op settings, mean, std).

    Returns:
        float32 (B, 3, H, W), normalised, channels_last.
    """
    x = to_float(images)
    b, _, h, w = x.shape
    if cfg.crop != "none" or bool(params.flip.any()):
        theta = params.theta.to(x.device, non_blocking=True)
        grid = F.affine_grid(theta, [b, 3, h, w], align_corners=False)
        # 'reflection' pads translations by mirroring; crops stay inside the image.
        mode = "reflection" if cfg.crop == "pad" else "border"
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode=mode, align_corners=False)
    if params.rotate is not None and bool(params.rotate.any()):
        x = rotate_quarters(x, params.rotate)
    x = color_jitter(x, params)
    if bool(params.gray.any()):
        g = params.gray.to(x.device, non_blocking=True).view(-1, 1, 1, 1)
        x = torch.where(g, grayscale(x).expand_as(x), x)
    if bool((params.blur_sigma > 0).any()):
        x = gaussian_blur(x, params.blur_sigma, cfg.blur_kernel or blur_kernel_for(min(h, w)))
    if bool(params.solarize.any()):
        x = solarize(x, params.solarize.to(x.device, non_blocking=True))
    if params.sobel is not None and bool(params.sobel.any()):
        x = sobel(x, params.sobel.to(x.device, non_blocking=True))
    if params.noise is not None:
        x = add_noise(x, params.noise)
    if params.randaugment is not None:
        from .randaugment import apply as randaugment

        x = randaugment(x, params.randaugment)
    mean = torch.tensor(cfg.mean, device=x.device)
    std = torch.tensor(cfg.std, device=x.device)
    return normalize(x, mean, std).contiguous(memory_format=torch.channels_last)


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


class ViewAugment:
    """Augments a batch once per view, each view with its own spec; views stacked on dim 0.

    Views that share one spec (the usual case) are drawn in a single call, exactly as
    :class:`BatchAugment` with ``n_views`` does.
    """

    def __init__(self, specs: Sequence[AugmentConfig | AugmentSpec]) -> None:
        self.augments = [BatchAugment(s) for s in specs]
        self.shared = all(a.cfg == self.augments[0].cfg for a in self.augments)

    def __call__(
        self,
        images: torch.Tensor,
        gen: torch.Generator,
        positions: torch.Tensor | None = None,
        total: int | None = None,
    ) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (V * B, 3, H, W) normalised: view v of image i at row v * B + i."""
        if self.shared:
            return self.augments[0](images, gen, len(self.augments), positions, total)
        return torch.cat([a(images, gen, 1, positions, total) for a in self.augments])


class BatchAugment:
    """Callable that augments uint8 batches into normalised float views.

    Example:
        >>> aug = BatchAugment(resolved_cfg)
        >>> views = aug(images_u8, generator, n_views=2)  # (2B, 3, H, W), views stacked
    """

    def __init__(self, cfg: AugmentConfig | AugmentSpec) -> None:
        self.cfg = cfg if isinstance(cfg, AugmentSpec) else AugmentSpec.from_config(cfg)

    def __call__(
        self,
        images: torch.Tensor,
        gen: torch.Generator,
        n_views: int = 1,
        positions: torch.Tensor | None = None,
        total: int | None = None,
    ) -> torch.Tensor:
        """Augment ``images`` (B, H, W, 3) uint8 ``n_views`` times, views stacked on dim 0.

        With ``positions`` (B,) and ``total``, ``images`` are the samples at those
        positions of a global batch of ``total``: parameters are drawn for the whole global
        batch and these samples' rows kept, so that several processes together augment
        exactly as one process would.
        """
        b, h, w = images.shape[:3]
        n = b if total is None else total
        params = sample_params(self.cfg, n_views * n, h, w, gen)
        if positions is not None:
            rows = torch.cat([v * n + positions.cpu() for v in range(n_views)])
            params = params.select(rows)

        if n_views > 1:
            images = images.repeat(n_views, 1, 1, 1)
        return apply_params(images, params, self.cfg)
