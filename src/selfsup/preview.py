"""Augmentation previews: real images beside views drawn by the batch augmentation (seeds' Figure 4).

>>> from selfsup.preview import preview
>>> preview("seed000", n=8, views=4, out="views.png")      # bundled CIFAR-10 by default
PosixPath('views.png')

The views come from :class:`selfsup.augment.BatchAugment`, the code that training runs,
on the uint8 images as training sees them; they are shown without normalisation.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .augment import BatchAugment, resolve_augment
from .config import AugmentConfig, DataConfig
from .data import class_balanced_indices, load_data, load_dataset
from .errors import ConfigError


def augmented_views(images: np.ndarray, cfg: AugmentConfig, views: int, seed: int = 0) -> np.ndarray:
    """``views`` augmentations of each image, as displayable floats.

    Args:
        images: uint8 (n, H, W, 3).
        cfg: A resolved augmentation (its mean/std are ignored: views are not normalised).
        views: Views per image.
        seed: Seed of the augmentation's random draws.

    Returns:
        float32 (n, views, H, W, 3) in [0, 1].
    """
    plain = replace(cfg, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    gen = torch.Generator().manual_seed(seed)
    x = BatchAugment(plain)(torch.from_numpy(np.ascontiguousarray(images)), gen, n_views=views)
    n = len(images)
    out = x.float().clamp(0, 1).permute(0, 2, 3, 1).reshape(views, n, *x.shape[2:], 3)
    return out.transpose(0, 1).contiguous().numpy()


def draw_views(images: np.ndarray, views: np.ndarray, path: Path, title: str, labels: list[str] | None = None) -> Path:
    """A grid PNG: one row per image, the original first, then its views, the class name under it.

    Drawn with Pillow (each panel enlarged without smoothing to at least 96 pixels), so
    previews need no plotting library.
    """
    from PIL import Image, ImageDraw

    n, k = views.shape[:2]
    side = max(96, images.shape[1])
    scale, pad, text_h = side / images.shape[1], 4, 14
    width, height = (k + 1) * (side + pad) + pad, text_h + n * (side + pad + text_h) + pad
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((pad, 1), title, fill="black")
    for i in range(n):
        top = text_h + i * (side + pad + text_h)
        panels = [images[i].astype(np.float32) / 255] + [views[i, j] for j in range(k)]
        for j, panel in enumerate(panels):
            tile = Image.fromarray((np.clip(panel, 0, 1) * 255).round().astype(np.uint8))
            tile = tile.resize((round(tile.width * scale), side), Image.Resampling.NEAREST)
            grid.paste(tile, (pad + j * (side + pad), top))
            caption = (labels[i] if labels else "image") if j == 0 else f"view {j}"
            draw.text((pad + j * (side + pad), top + side + 1), caption, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def preview(
    preset: str | None = None,
    n: int = 8,
    views: int = 4,
    out: str | Path = "views.png",
    data: str | DataConfig = "cifar10",
    seed: int = 0,
    augment: AugmentConfig | None = None,
) -> Path:
    """Draw ``n`` images of ``data`` and ``views`` augmented views of each into ``out`` (a PNG).

    Args:
        preset: An augmentation preset (``selfsup.augment.PRESETS``); default 'simclr'.
        n: Images (rows), class-balanced, chosen by ``seed``.
        views: Views per image (columns after the original).
        out: The PNG to write.
        data: A dataset name or path, as ``--data`` takes, or a run's data section (its
            image size and decoding settings too).
        seed: Chooses the images and the augmentations.
        augment: An augmentation config instead of a preset (e.g. a run's, resolved).

    Raises:
        ConfigError: For an unknown preset or sizes below 1.
    """
    if n < 1 or views < 1:
        raise ConfigError(f"--n and --views must be at least 1, got {n} and {views}")
    base = augment if augment is not None else AugmentConfig()
    cfg = resolve_augment(base, base.preset or preset or "simclr")  # fills only what is unset
    splits = (
        load_data(data, progress=False, subset=False)
        if isinstance(data, DataConfig)
        else load_dataset(data, progress=False)
    )
    train = splits.train
    idx = class_balanced_indices(train.labels, min(n, len(train)), seed)
    images = train.images[idx]
    grid = augmented_views(images, cfg, views, seed)
    labels = [train.classes[int(y)] for y in train.labels[idx]]
    return draw_views(images, grid, Path(out), f"augmentation: {cfg.preset}", labels)
