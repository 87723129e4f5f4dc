"""In-memory image datasets: uint8 arrays, labels and class names."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError


@dataclass
class ImageDataset:
    """A split held in memory.

    Attributes:
        images: uint8 array (N, H, W, 3).
        labels: int64 array (N,), values in ``range(len(classes))``.
        classes: Class names; ``labels`` index into it.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (len(self.images),):
            raise ValueError("labels must have one entry per image")

    def __len__(self) -> int:
        return len(self.images)

    def select(self, indices: np.ndarray) -> ImageDataset:
        """A new dataset with the given rows."""
        return ImageDataset(self.images[indices], self.labels[indices], self.classes)


@dataclass
class DataSplits:
    """Train and test splits of one source.

    Attributes:
        train: The training split.
        test: The test split (same classes).
        source: Where the data came from, for messages and run records.
        digest: SHA256 identifying the source's content (the cache key).
    """

    train: ImageDataset
    test: ImageDataset
    source: str
    digest: str


def class_balanced_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Pick ``n`` indices with classes as equal as possible, chosen by ``seed``.

    Each class gives ``n // C`` items and the first ``n % C`` classes (in a seeded order)
    one more; within a class the items are a seeded random choice. The result is sorted.

    Raises:
        DataError: If ``n`` exceeds what the classes can give.
    """
    classes = np.unique(labels)
    if n > len(labels):
        raise DataError(f"subset of {n} requested but the split has only {len(labels)} images")
    if n == len(labels):
        # All of them: balanced as far as the split is (a subset of a subset may not be).
        return np.arange(n)
    rng = np.random.default_rng(seed)
    per_class = {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    base, extra = divmod(n, len(classes))
    order = rng.permutation(classes)
    want = {int(c): base + (1 if i < extra else 0) for i, c in enumerate(order)}
    short = [c for c in want if want[c] > len(per_class[c])]
    if short:
        raise DataError(
            f"a class-balanced subset of {n} needs {want[short[0]]} images of class {short[0]}, "
            f"which has {len(per_class[short[0]])}"
        )
    picked = np.concatenate([per_class[c][: want[c]] for c in want])
    return np.sort(picked)


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, H, W, 3) images, as fractions of 255 (4 decimals)."""
    import torch

    flat = torch.from_numpy(np.ascontiguousarray(images)).view(-1, 3)
    values = np.arange(256, dtype=np.float64)
    mean, std = [], []
    for c in range(3):
        # A 256-bin histogram gives exact moments without a float copy of the data
        # (torch's bincount is several times faster than NumPy's here).
        counts = torch.bincount(flat[:, c].contiguous(), minlength=256).double().numpy()
        n = counts.sum()
        m = (counts * values).sum() / n
        var = max((counts * values**2).sum() / n - m**2, 0.0)
        mean.append(round(float(m) / 255, 4))
        std.append(round(float(np.sqrt(var)) / 255, 4))
    return mean, std
