"""RandAugment as FixMatch uses it, on whole batches on the device, and Cutout.

Each image gets ``n`` operations chosen uniformly (with replacement) from FixMatch's
list, each with its own magnitude drawn uniformly from that operation's range (Sohn et
al. 2020, table 12; RandAugment without a global magnitude), then a Cutout square of side
up to ``cutout`` x the image size filled with gray. Parameters are drawn on the CPU from
the step's generator; on the device each operation runs once over the images that chose
it (the indices are known on the host), so nothing waits for the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..runtime import to_device
from .ops import adjust_brightness, adjust_contrast, adjust_saturation, solarize

#: FixMatch's operations and their magnitude ranges (table 12 of the paper).
OPS: tuple[tuple[str, float, float], ...] = (
    ("autocontrast", 0.0, 1.0),
    ("brightness", 0.05, 0.95),
    ("color", 0.05, 0.95),
    ("contrast", 0.05, 0.95),
    ("equalize", 0.0, 1.0),
    ("identity", 0.0, 1.0),
    ("posterize", 4.0, 8.0),  # bits kept
    ("rotate", -30.0, 30.0),  # degrees
    ("sharpness", 0.05, 0.95),
    ("shear_x", -0.3, 0.3),
    ("shear_y", -0.3, 0.3),
    ("solarize", 0.0, 1.0),  # threshold
    ("translate_x", -0.3, 0.3),  # fraction of the width
    ("translate_y", -0.3, 0.3),
)
NAMES = tuple(name for name, _, _ in OPS)
GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
GRAY = 0.5  # fill of uncovered pixels and of Cutout (FixMatch fills with 128)


@dataclass
class RandAugmentParams:
    """Per-image draws (CPU tensors).

    Attributes:
        ops: (B, n) operation indices into :data:`OPS`.
        magnitudes: (B, n) each operation's magnitude, within its range.
        cutout: (B, 3) centre row, centre column and side in pixels (side 0: none).
    """

    ops: torch.Tensor
    magnitudes: torch.Tensor
    cutout: torch.Tensor

    def select(self, rows: torch.Tensor) -> RandAugmentParams:
        """The draws of the given images."""
        return RandAugmentParams(self.ops[rows], self.magnitudes[rows], self.cutout[rows])


def sample(b: int, n: int, cutout: float, height: int, width: int, gen: torch.Generator) -> RandAugmentParams:
    """Draw ``n`` operations per image and a Cutout square of side up to ``cutout`` x the size."""
    ops = torch.randint(0, len(OPS), (b, n), generator=gen)
    u = torch.rand(b, n, generator=gen, dtype=torch.float64)
    lo = torch.tensor([o[1] for o in OPS], dtype=torch.float64)[ops]
    hi = torch.tensor([o[2] for o in OPS], dtype=torch.float64)[ops]
    mags = lo + (hi - lo) * u
    boxes = torch.zeros(b, 3, dtype=torch.long)
    if cutout > 0:
        v = torch.rand(b, 3, generator=gen, dtype=torch.float64)
        boxes[:, 0] = (v[:, 0] * height).long()
        boxes[:, 1] = (v[:, 1] * width).long()
        boxes[:, 2] = torch.clamp((v[:, 2] * cutout * min(height, width)).round().long(), min=1)
    return RandAugmentParams(ops, mags.float(), boxes)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image to [0, 1] (unchanged where it is constant)."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = torch.where(hi > lo, 1.0 / (hi - lo).clamp_min(1e-12), torch.ones_like(hi))
    lo = torch.where(hi > lo, lo, torch.zeros_like(lo))
    return ((x - lo) * scale).clamp_(0, 1)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per channel, on 8-bit levels (torchvision's)."""
    from torchvision.transforms.v2.functional import equalize as tv_equalize

    u8 = (x * 255).round().clamp(0, 255).to(torch.uint8)
    return tv_equalize(u8).float() / 255


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top ``bits`` (B,) bits of each 8-bit level."""
    u8 = (x * 255).round().clamp(0, 255).to(torch.uint8)
    keep = bits.round().to(torch.int64).clamp(1, 8)
    mask = ((0xFF << (8 - keep)) & 0xFF).to(torch.uint8).view(-1, 1, 1, 1).to(u8.device)
    return (u8 & mask).float() / 255


def sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with a smoothed image (PIL's 3x3 SMOOTH kernel; borders kept) by ``factor`` (B,)."""
    kernel = torch.ones(3, 3, device=x.device, dtype=x.dtype)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(x.shape[1], 1, 3, 3)
    smooth = F.conv2d(x, kernel, groups=x.shape[1])
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = smooth
    f = to_device(factor.view(-1, 1, 1, 1), x.device)
    return (f * x + (1 - f) * degenerate).clamp_(0, 1)


def _affine(name: str, m: torch.Tensor) -> torch.Tensor:
    """(k, 2, 3) maps from output to input coordinates (normalised, centre origin)."""
    k = len(m)
    theta = torch.zeros(k, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    m = m.double()
    if name == "rotate":  # counter-clockwise for positive angles, as torchvision's rotate
        a = m * math.pi / 180
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a), -torch.sin(a)
        theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a), torch.cos(a)
    elif name == "shear_x":
        theta[:, 0, 1] = m
    elif name == "shear_y":
        theta[:, 1, 0] = m
    elif name == "translate_x":
        theta[:, 0, 2] = 2 * m  # a fraction f of the width is 2f in normalised units
    elif name == "translate_y":
        theta[:, 1, 2] = 2 * m
    return theta.float()


_PIXEL_OPS = {
    "autocontrast": lambda x, m: autocontrast(x),
    "brightness": adjust_brightness,
    "color": adjust_saturation,
    "contrast": adjust_contrast,
    "equalize": lambda x, m: equalize(x),
    "identity": lambda x, m: x,
    "posterize": posterize,
    "sharpness": sharpness,
    "solarize": lambda x, m: solarize(x, torch.ones(len(x), dtype=torch.bool, device=x.device), m),
}


def apply(x: torch.Tensor, params: RandAugmentParams) -> torch.Tensor:
    """RandAugment then Cutout on float images (B, 3, H, W) in [0, 1]."""
    for slot in range(params.ops.shape[1]):
        ops, mags = params.ops[:, slot], params.magnitudes[:, slot]
        theta = torch.zeros(len(x), 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        geometric = torch.zeros(len(x), dtype=torch.bool)
        for index, (name, _, _) in enumerate(OPS):
            rows = (ops == index).nonzero().flatten()  # CPU tensors: no device sync
            if len(rows) == 0:
                continue
            if name in GEOMETRIC:
                theta[rows] = _affine(name, mags[rows])
                geometric[rows] = True
            else:
                idx = to_device(rows, x.device)
                m = to_device(mags[rows], x.device)
                x = x.index_copy(0, idx, _PIXEL_OPS[name](x.index_select(0, idx), m))
        if bool(geometric.any()):
            grid = F.affine_grid(to_device(theta, x.device), list(x.shape), align_corners=False)
            # Zero padding of (x - gray): pixels from outside the image come out gray.
            x = F.grid_sample(x - GRAY, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + GRAY
    return cutout(x.clamp(0, 1), params.cutout)


def cutout(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Fill a square per image with gray.

    ``boxes`` (B, 3) holds centre row ``r``, centre column ``c`` and side ``s``: rows
    ``[r - s // 2, r - s // 2 + s)`` and the columns alike are filled, clipped to the
    image; side 0 leaves the image as it is.
    """
    if not bool((boxes[:, 2] > 0).any()):
        return x
    b = to_device(boxes, x.device)
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    side = b[:, 2].view(-1, 1, 1)
    top, left = b[:, 0].view(-1, 1, 1) - side // 2, b[:, 1].view(-1, 1, 1) - side // 2
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return torch.where(inside.unsqueeze(1), torch.full_like(x, GRAY), x)


__all__ = [
    "NAMES",
    "OPS",
    "RandAugmentParams",
    "apply",
    "autocontrast",
    "cutout",
    "equalize",
    "posterize",
    "sample",
    "sharpness",
]
