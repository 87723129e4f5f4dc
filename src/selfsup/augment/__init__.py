"""Batch augmentation on the training device, with independent random parameters per sample.

The usual torchvision pipeline augments one PIL image at a time in DataLoader workers;
here a whole batch of uint8 images is augmented at once on the device that trains:

1. :func:`~selfsup.augment.params.sample_params` draws every random parameter for every
   sample (crop box, flip, jitter factors and order, grayscale, blur sigma) with a CPU
   :class:`torch.Generator`. The arrays are tiny, drawing them on the host costs nothing
   and never waits for the GPU, and a seed gives the same augmentations on every device.
2. :func:`~selfsup.augment.batch.apply_params` runs the ops
   (:mod:`selfsup.augment.ops`) on the device: one ``grid_sample`` does crop, resize,
   flip and translation together; colour jitter, grayscale and blur follow; the result is
   normalised and returned in channels_last layout.
   :func:`~selfsup.augment.batch.apply_fixed` does the same with control flow fixed by
   the config (every op on every sample, identity where a sample skips it), which
   ``torch.compile`` can fuse (``train.compile`` on a GPU).

The distributions follow torchvision's ``RandomResizedCrop``, ``RandomHorizontalFlip``,
``RandomApply([ColorJitter], p)``, ``RandomGrayscale`` and ``GaussianBlur`` (tests compare
them). Presets for the recipes live in :mod:`selfsup.augment.presets`; FixMatch's
RandAugment and Cutout in :mod:`selfsup.augment.randaugment`.
"""

from .batch import BatchAugment, ViewAugment, apply_fixed, apply_params
from .ops import (
    add_noise,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    blur_kernel_for,
    color_jitter,
    gaussian_blur,
    grayscale,
    normalize,
    rotate_quarters,
    sobel,
    solarize,
    to_float,
)
from .params import AugmentParams, sample_crop_boxes, sample_params
from .presets import PRESETS, AugmentSpec, resolve_augment, view_configs

__all__ = [
    "PRESETS",
    "AugmentParams",
    "AugmentSpec",
    "BatchAugment",
    "ViewAugment",
    "add_noise",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "apply_fixed",
    "apply_params",
    "blur_kernel_for",
    "color_jitter",
    "gaussian_blur",
    "grayscale",
    "normalize",
    "resolve_augment",
    "rotate_quarters",
    "sample_crop_boxes",
    "sample_params",
    "sobel",
    "solarize",
    "to_float",
    "view_configs",
]
