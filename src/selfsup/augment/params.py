"""Random parameters of a batch of views, drawn on the host with a seeded generator.

:func:`sample_params` draws every parameter of every sample (crop box, flip, jitter
factors and their order, grayscale, blur sigma, the optional operations) with a CPU
:class:`torch.Generator`: the arrays are tiny, drawing them never waits for a GPU, and a
seed gives the same augmentations on every device. The distributions follow
torchvision's per-image transforms (the tests compare them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from ..errors import ConfigError
from .presets import AugmentSpec

#: Colour-jitter op ids, in the order of their factors in ``AugmentParams.jitter``.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


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


def _geometry(
    cfg: AugmentSpec, sign: torch.Tensor, size: tuple[int, int], gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each sample's affine map (crop, resize, flip by ``sign``, translation), crop area and aspect."""
    n, (height, width) = len(sign), size
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
    return theta, area, aspect


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
    theta, area, aspect = _geometry(cfg, 1.0 - 2.0 * flip.double(), (height, width), gen)

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
