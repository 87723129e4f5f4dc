"""Loading a dataset: the one entry point that resolves, checks the cache, decodes and subsets."""

from __future__ import annotations

from ..config import DataConfig
from .cache import cache_file, load_cache, save_cache
from .dataset import DataSplits, ImageDataset, class_balanced_indices
from .readers import (
    MAX_FILE_MB,
)
from .sources import data_root, decode_layout_source, decode_pickle_source, resolve_source, source_digest


def load_dataset(
    name: str = "cifar10",
    image_size: int = 32,
    root: str | None = None,
    download: bool = False,
    skip_invalid: bool = False,
    test_fraction: float = 0.1,
    progress: bool = True,
    use_cache: bool = True,
    max_file_mb: float | None = MAX_FILE_MB,
) -> DataSplits:
    """Load a dataset's train and test splits as uint8 arrays.

    Args:
        name: 'cifar10', 'cifar10-pickle' or a path (see the module docstring).
        image_size: Side of the square images; others are resized and centre-cropped.
        root: Folder of named datasets (default: :func:`data_root`).
        download: Download 'cifar10-pickle' when missing.
        skip_invalid: Skip unreadable files instead of failing.
        test_fraction: Held-out fraction when the source has a single split.
        progress: Show a progress bar while decoding large sources.
        use_cache: Read and write the decoded-array cache.
        max_file_mb: Refuse (or, with ``skip_invalid``, skip) an image file or tar member
            larger than this before reading it; None = no limit.

    Returns:
        The splits, with class names and the source digest.

    Raises:
        DataError: For a missing, empty, corrupt or ill-formed source.
    """
    kind, path = resolve_source(name, data_root(root), download)
    digest = source_digest(kind, path, skip_invalid, max_file_mb)
    cache = cache_file(digest, image_size, skip_invalid, test_fraction, max_file_mb)
    loaded = load_cache(cache) if use_cache else None
    if loaded is None:
        if kind == "pickle":
            loaded = decode_pickle_source(path, image_size)
        else:
            loaded = decode_layout_source(kind, path, image_size, skip_invalid, test_fraction, progress, max_file_mb)
        if use_cache:
            save_cache(cache, *loaded)
    splits, classes = loaded
    return DataSplits(
        train=ImageDataset(*splits["train"], classes),
        test=ImageDataset(*splits["test"], classes),
        source=str(path) if name not in ("cifar10", "cifar10-pickle") else f"{name} ({path})",
        digest=digest,
    )


def load_data(cfg: DataConfig, seed: int = 0, progress: bool = True, subset: bool = True) -> DataSplits:
    """The dataset a :class:`DataConfig` names: the one helper every command loads data with.

    Args:
        cfg: The data section.
        seed: Chooses the class-balanced training subset (``cfg.subset``).
        progress: Show a progress bar while decoding large sources.
        subset: Apply ``cfg.subset`` (False: the whole training split, as evaluation uses).
    """
    splits = load_dataset(
        cfg.name,
        cfg.image_size,
        cfg.root,
        cfg.download,
        cfg.skip_invalid,
        cfg.test_fraction,
        progress,
        max_file_mb=cfg.max_file_mb,
    )
    return with_subset(splits, cfg.subset, seed) if subset else splits


def with_subset(splits: DataSplits, n: int | None, seed: int) -> DataSplits:
    """``splits`` with a class-balanced training subset of ``n`` images (all when None)."""
    if n is None or n >= len(splits.train):
        return splits
    idx = class_balanced_indices(splits.train.labels, n, seed)
    return DataSplits(train=splits.train.select(idx), test=splits.test, source=splits.source, digest=splits.digest)
