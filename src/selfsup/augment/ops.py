"""The augmentation operations, each on a whole batch with per-sample parameters.

Colour jitter (brightness, contrast, saturation, hue as torchvision computes them),
grayscale, Gaussian blur, solarize, Sobel edges, noise, quarter rotations and the final
normalisation; :func:`selfsup.augment.batch.apply_params` chains them.
"""

from __future__ import annotations

from itertools import permutations
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..runtime import to_device

if TYPE_CHECKING:
    from .params import AugmentParams

# Luma weights of torchvision's rgb_to_grayscale (ITU-R 601-2).
_GRAY = (0.2989, 0.587, 0.114)


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


#: Factors that leave an image unchanged: brightness, contrast, saturation 1, hue shift 0.
_JITTER_IDENTITY = (1.0, 1.0, 1.0, 0.0)


def color_jitter(x: torch.Tensor, params: AugmentParams, grouped: bool | None = None) -> torch.Tensor:
    """Apply brightness/contrast/saturation/hue with each sample's own factors and order.

    Two ways that give the same images (to float rounding; tested):

    * ``grouped`` (the default on a CPU): samples are grouped by their op order (at most
      24 groups, found on the host), so every op runs once per jittered sample. On a CPU
      the arithmetic is what costs, and this does the least of it.
    * rounds (the default on a GPU): four rounds over the whole batch, in round ``r``
      each sample's ``r``-th op with its factor and the other three ops with identity
      factors (exact no-ops). Four times the arithmetic, but about 1,100 PyTorch
      operations a batch of 1,024 views instead of 6,400 (counted with ``torch.profiler``):
      a GPU does the arithmetic of a CIFAR batch in microseconds and spends its time
      waiting for the host to launch kernels, so fewer launches pay there (docs/speed.md
      has the timings).

    Nothing waits for the device either way.

    Args:
        x: float (B, 3, H, W) in [0, 1].
        params: From :func:`~selfsup.augment.params.sample_params` with ``n == B``.
        grouped: Force one path; None picks by ``x``'s device.
    """
    applied = params.jitter_applied
    if not bool(applied.any()):
        return x
    # Ops whose factors are identity for every sample are skipped entirely.
    identity = torch.tensor(_JITTER_IDENTITY)
    active = [op for op in range(4) if bool((params.jitter[applied, op] != identity[op]).any())]
    if grouped is None:
        grouped = x.device.type == "cpu"
    if not grouped:
        return _jitter_rounds(x, params, active)
    order_key = params.jitter_order @ torch.tensor([64, 16, 4, 1])
    factors = to_device(params.jitter, x.device)
    out = x.clone()
    for perm in permutations(range(4)):
        key = perm[0] * 64 + perm[1] * 16 + perm[2] * 4 + perm[3]
        idx_cpu = torch.nonzero(applied & (order_key == key)).flatten()
        if idx_cpu.numel() == 0:
            continue
        idx = to_device(idx_cpu, x.device)
        y = x.index_select(0, idx)
        f = factors.index_select(0, idx)
        for op in perm:
            if op in active:
                y = _JITTER_OPS[op](y, f[:, op])
        out.index_copy_(0, idx, y)
    return out


def _jitter_rounds(x: torch.Tensor, params: AugmentParams, active: list[int]) -> torch.Tensor:
    """The whole-batch form of :func:`color_jitter`: op ``order[:, r]`` of every sample in round ``r``.

    The other ops of a round get identity factors, which change nothing exactly
    (``x * 1``, ``1 * x + 0 * m``, clamps of values already in [0, 1]); hue, whose
    RGB-HSV round trip is not exact, is kept only where its shift is non-zero.
    """
    return jitter_rounds(x, to_device(params.jitter, x.device), to_device(params.jitter_order, x.device), active)


def jitter_rounds(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor, active: list[int]) -> torch.Tensor:
    """:func:`_jitter_rounds` on parameters already on ``x``'s device; reads nothing back to the host.

    Args:
        x: float (B, 3, H, W) in [0, 1].
        factors: (B, 4) brightness, contrast, saturation factors and hue shift, identity
            (1, 1, 1, 0) where jitter is not applied.
        order: (B, 4) int64 op ids, each sample's first op first.
        active: The op ids to run (identity factors make the others no-ops).
    """
    dev = x.device
    identity = torch.tensor(_JITTER_IDENTITY, device=dev)
    ops = torch.arange(4, device=dev)
    for r in range(4):
        f = torch.where(order[:, r : r + 1] == ops, factors, identity)  # (B, 4): this round's factors
        for op in active:
            if op == 3:
                shift = f[:, 3]
                x = torch.where((shift != 0).view(-1, 1, 1, 1), adjust_hue(x, shift), x)
            else:
                x = _JITTER_OPS[op](x, f[:, op])
    return x


def _gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """(B,) sigmas -> (B, size) normalised 1-D kernels; sigma 0 gives the identity kernel."""
    half = (size - 1) / 2
    t = torch.linspace(-half, half, size, device=sigma.device)  # on sigma's device: no copy when it is on a GPU
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
    k = to_device(_gaussian_kernels(sigma, kernel_size), x.device, x.dtype)
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
    return (x + to_device(noise, x.device, x.dtype)).clamp(0, 1)


def rotate_quarters(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate each square image by ``turns`` (B,) quarter turns counter-clockwise (``torch.rot90``)."""
    out = x
    for k in (1, 2, 3):
        rows = torch.nonzero(turns == k).flatten()
        if rows.numel():
            idx = to_device(rows, x.device)
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
