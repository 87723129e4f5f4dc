"""The batch augmenter: sampled parameters applied to a batch of uint8 images on its device.

:func:`apply_params` runs one ``grid_sample`` for crop, resize, flip and translation
together, then the colour operations, and returns normalised float images in
channels_last layout; :class:`BatchAugment` samples and applies one pipeline,
:class:`ViewAugment` one per view of a method.

The *fixed* path, :func:`apply_fixed`, gives the same images with control flow that
depends on the config alone: every operation on every sample (identity parameters where
a sample skips it, which change nothing exactly), the parameters copied in one transfer,
and no value read back to the host, so the same kernels run every step and
``torch.compile`` can fuse them (on a GPU a CIFAR batch's augmentation is bound by kernel
launches, not by arithmetic). It is what ``train.compile`` compiles on a GPU, and not
the default elsewhere until a GPU timing says it pays (see docs/speed.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..config import AugmentConfig
from ..runtime import to_device
from .ops import (
    add_noise,
    blur_kernel_for,
    color_jitter,
    gaussian_blur,
    grayscale,
    jitter_rounds,
    normalize,
    rotate_quarters,
    sobel,
    solarize,
    to_float,
)
from .params import AugmentParams, sample_params
from .presets import AugmentSpec


def apply_params(
    images: torch.Tensor, params: AugmentParams, cfg: AugmentSpec, size: int | None = None
) -> torch.Tensor:
    """Augment a batch with the given parameters.

    Args:
        images: uint8 (B, H, W, 3) on the training device.
        params: From :func:`sample_params` with ``n == B``.
        cfg: The augmentation that produced ``params`` (op settings, mean, std).
        size: Side of the output views (progressive resizing); None = the images' own.

    Returns:
        float32 (B, 3, H, W) (H = W = ``size`` when given), normalised, channels_last.
    """
    x = to_float(images)
    h, w = x.shape[-2:]
    if size is not None and (size, size) != (h, w):
        if params.randaugment is not None:
            raise ValueError("views of another size cannot take RandAugment or Cutout (drawn in input pixels)")
        h = w = size  # the crop's resampling grid has the output's size: one interpolation
    if cfg.crop != "none" or bool(params.flip.any()) or x.shape[-2:] != (h, w):
        x = _resample(x, to_device(params.theta, x.device), cfg, h, w)
    if params.rotate is not None and bool(params.rotate.any()):
        x = rotate_quarters(x, params.rotate)
    x = color_jitter(x, params)
    if bool(params.gray.any()):
        g = to_device(params.gray, x.device).view(-1, 1, 1, 1)
        x = torch.where(g, grayscale(x).expand_as(x), x)
    if bool((params.blur_sigma > 0).any()):
        x = gaussian_blur(x, params.blur_sigma, cfg.blur_kernel or blur_kernel_for(min(h, w)))
    if bool(params.solarize.any()):
        x = solarize(x, to_device(params.solarize, x.device))
    if params.sobel is not None and bool(params.sobel.any()):
        x = sobel(x, to_device(params.sobel, x.device))
    if params.noise is not None:
        x = add_noise(x, params.noise)
    if params.randaugment is not None:
        from .randaugment import apply as randaugment

        x = randaugment(x, params.randaugment)
    return _normalized(x, cfg)


def _resample(x: torch.Tensor, theta: torch.Tensor, cfg: AugmentSpec, h: int, w: int) -> torch.Tensor:
    """One bilinear ``grid_sample`` of ``x`` through the affine maps ``theta`` (B, 2, 3) to ``h`` x ``w``."""
    grid = F.affine_grid(theta, [len(x), 3, h, w], align_corners=False)
    # 'reflection' pads translations by mirroring; crops stay inside the image.
    mode = "reflection" if cfg.crop == "pad" else "border"
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=mode, align_corners=False)


def _normalized(x: torch.Tensor, cfg: AugmentSpec) -> torch.Tensor:
    """``x`` normalised with the config's mean and std, in channels_last layout."""
    mean = torch.tensor(cfg.mean, device=x.device)
    std = torch.tensor(cfg.std, device=x.device)
    return normalize(x, mean, std).contiguous(memory_format=torch.channels_last)


class DeviceParams(NamedTuple):
    """What :func:`apply_fixed` reads, on the training device (see :class:`AugmentParams`)."""

    theta: torch.Tensor  # (B, 2, 3) float32
    jitter: torch.Tensor  # (B, 4) float32, identity where not applied
    order: torch.Tensor  # (B, 4) int64
    gray: torch.Tensor  # (B,) bool
    blur_sigma: torch.Tensor  # (B,) float32, 0 where not blurred
    solarize: torch.Tensor  # (B,) bool


def device_params(params: AugmentParams, device: torch.device) -> DeviceParams:
    """The parameters :func:`apply_fixed` needs, packed into one (B, 17) float tensor and copied at once."""
    b = len(params.flip)
    packed = torch.cat(
        [
            params.theta.reshape(b, 6),
            params.jitter,
            params.jitter_order.float(),  # op ids 0-3: exact in float32
            params.gray.float()[:, None],
            params.blur_sigma[:, None],
            params.solarize.float()[:, None],
        ],
        1,
    )
    d = to_device(packed, device)
    theta, jitter, order = d[:, :6].view(b, 2, 3), d[:, 6:10], d[:, 10:14].long()
    return DeviceParams(theta, jitter, order, d[:, 14] > 0.5, d[:, 15], d[:, 16] > 0.5)


def fixed_path_supported(cfg: AugmentSpec) -> bool:
    """Whether :func:`apply_fixed` covers ``cfg`` (not RandAugment, Cutout or SimCLR's Figure 5 ops)."""
    return cfg.randaugment_n == 0 and cfg.cutout == 0 and cfg.sobel_p == 0 and cfg.noise_p == 0 and cfg.rotate_p == 0


def apply_fixed(images: torch.Tensor, p: DeviceParams, cfg: AugmentSpec, size: int | None = None) -> torch.Tensor:
    """:func:`apply_params` with control flow fixed by ``cfg`` alone; the same images (tested).

    Every operation the config can draw runs on the whole batch, with identity
    parameters for the samples that skip it (``x * 1``, a delta blur kernel,
    ``where(False, ...)``: exact no-ops), and nothing is read back to the host. The
    resampling runs whenever the config crops or flips, also for a batch that drew no flip
    (then an identity map, where :func:`apply_params` would copy).

    Args:
        images: uint8 (B, H, W, 3) on the training device.
        p: From :func:`device_params`, on the same device.
        cfg: The augmentation; :func:`fixed_path_supported` must hold.
        size: Side of the output views (progressive resizing); None = the images' own.

    Returns:
        float32 (B, 3, H, W), normalised, channels_last.
    """
    x = to_float(images)
    h, w = (size, size) if size is not None else x.shape[-2:]
    if cfg.crop != "none" or cfg.flip_p > 0 or x.shape[-2:] != (h, w):
        x = _resample(x, p.theta, cfg, h, w)
    if cfg.jitter_p > 0 and cfg.jitter_strength > 0:
        x = jitter_rounds(x, p.jitter, p.order, [0, 1, 2, 3])
    if cfg.grayscale_p > 0:
        x = torch.where(p.gray.view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)
    if cfg.blur_p > 0:
        x = gaussian_blur(x, p.blur_sigma, cfg.blur_kernel or blur_kernel_for(min(h, w)))
    if cfg.solarize_p > 0:
        x = solarize(x, p.solarize)
    return _normalized(x, cfg)


class ViewAugment:
    """Augments a batch once per view, each view with its own spec; views stacked on dim 0.

    Views that share one spec (the usual case) are drawn in a single call, exactly as
    :class:`BatchAugment` with ``n_views`` does.
    """

    def __init__(self, specs: Sequence[AugmentConfig | AugmentSpec], compile: bool = False) -> None:
        self.augments = [BatchAugment(s, compile=compile) for s in specs]
        self.shared = all(a.cfg == self.augments[0].cfg for a in self.augments)

    def __call__(
        self,
        images: torch.Tensor,
        gen: torch.Generator,
        positions: torch.Tensor | None = None,
        total: int | None = None,
        size: int | None = None,
    ) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (V * B, 3, H, W) normalised: view v of image i at row v * B + i.

        ``size`` resizes every view to ``size`` x ``size`` (progressive resizing).
        """
        if self.shared:
            return self.augments[0](images, gen, len(self.augments), positions, total, size)
        return torch.cat([a(images, gen, 1, positions, total, size) for a in self.augments])


class BatchAugment:
    """Callable that augments uint8 batches into normalised float views.

    With ``compile`` on a GPU, configs that :func:`fixed_path_supported` covers take
    :func:`apply_fixed` compiled with ``torch.compile`` (the first batch of each view size
    compiles); ``fixed=True``/``False`` forces a path on any device (``None``: the fixed
    path only where it is compiled).

    Example:
        >>> aug = BatchAugment(resolved_cfg)
        >>> views = aug(images_u8, generator, n_views=2)  # (2B, 3, H, W), views stacked
    """

    def __init__(self, cfg: AugmentConfig | AugmentSpec, compile: bool = False, fixed: bool | None = None) -> None:
        self.cfg = cfg if isinstance(cfg, AugmentSpec) else AugmentSpec.from_config(cfg)
        self.compile = compile
        self.fixed = fixed
        self._compiled: dict[int | None, Callable[..., torch.Tensor]] = {}

    def _fixed_fn(self, size: int | None, device: torch.device) -> Callable[..., torch.Tensor]:
        """:func:`apply_fixed` for this config and size, compiled once where asked."""
        fn: Callable[..., torch.Tensor] = functools.partial(apply_fixed, cfg=self.cfg, size=size)
        if not (self.compile and device.type == "cuda"):
            return fn
        if size not in self._compiled:
            self._compiled[size] = torch.compile(fn, dynamic=False)
        return self._compiled[size]

    def __call__(
        self,
        images: torch.Tensor,
        gen: torch.Generator,
        n_views: int = 1,
        positions: torch.Tensor | None = None,
        total: int | None = None,
        size: int | None = None,
    ) -> torch.Tensor:
        """Augment ``images`` (B, H, W, 3) uint8 ``n_views`` times, views stacked on dim 0.

        With ``positions`` (B,) and ``total``, ``images`` are the samples at those
        positions of a global batch of ``total``: parameters are drawn for the whole global
        batch and these samples' rows kept, so that several processes together augment
        exactly as one process would. ``size`` is the views' side (None: the images').
        """
        b, h, w = images.shape[:3]
        n = b if total is None else total
        params = sample_params(self.cfg, n_views * n, h, w, gen)
        if positions is not None:
            rows = torch.cat([v * n + positions.cpu() for v in range(n_views)])
            params = params.select(rows)

        if n_views > 1:
            images = images.repeat(n_views, 1, 1, 1)
        fixed = self.fixed if self.fixed is not None else (self.compile and images.device.type == "cuda")
        if fixed and fixed_path_supported(self.cfg):
            return self._fixed_fn(size, images.device)(images, device_params(params, images.device))
        return apply_params(images, params, self.cfg, size)
