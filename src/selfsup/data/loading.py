"""Loading a dataset: the one entry point that resolves, checks the cache, decodes and subsets."""

from __future__ import annotations

from typing import Any

from ..config import DataConfig
from .cache import cache_file, load_cache, save_cache
from .dataset import DataSplits, ImageDataset, class_balanced_indices
from .sources import data_root, decode_layout_source, decode_pickle_source, resolve_source, source_digest


def load_dataset(name: str = "cifar10", progress: bool = True, use_cache: bool = True, **settings: Any) -> DataSplits:
    """Load a dataset's train and test splits as uint8 arrays.

    Args:
        name: 'cifar10', 'cifar10-pickle' or a path (see the module docstring).
        progress: Show a progress bar while decoding large sources.
        use_cache: Read and write the decoded-array cache.
        **settings: Any other field of :class:`~selfsup.config.DataConfig`, e.g.
            ``image_size=64`` (others are resized and centre-cropped), ``test_fraction``,
            ``root``, ``download``, ``skip_invalid``, ``max_file_mb`` (None = no limit).

    Returns:
        The splits, with class names and the source digest.

    Raises:
        DataError: For a missing, empty, corrupt or ill-formed source.
        TypeError: For a keyword that is no data setting.
    """
    return read_dataset(DataConfig(name=name, **settings), progress, use_cache)


def read_dataset(cfg: DataConfig, progress: bool = True, use_cache: bool = True) -> DataSplits:
    """The dataset ``cfg`` names, whole (``cfg.subset`` aside): from the cache, or decoded once into it."""
    kind, path = resolve_source(cfg.name, data_root(cfg.root), cfg.download)
    digest = source_digest(kind, path, cfg.skip_invalid, cfg.max_file_mb)
    cache = cache_file(digest, cfg.image_size, cfg.skip_invalid, cfg.test_fraction, cfg.max_file_mb)
    loaded = load_cache(cache) if use_cache else None
    if loaded is None:
        if kind == "pickle":
            loaded = decode_pickle_source(path, cfg.image_size)
        else:
            loaded = decode_layout_source(kind, path, cfg.image_size, cfg.skip_invalid, cfg.test_fraction, progress,
                                          cfg.max_file_mb)  # fmt: skip
        if use_cache:
            save_cache(cache, *loaded)
    splits, classes = loaded
    return DataSplits(
        train=ImageDataset(*splits["train"], classes),
        test=ImageDataset(*splits["test"], classes),
        source=str(path) if cfg.name not in ("cifar10", "cifar10-pickle") else f"{cfg.name} ({path})",
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
    splits = read_dataset(cfg, progress)
    return with_subset(splits, cfg.subset, seed) if subset else splits


def with_subset(splits: DataSplits, n: int | None, seed: int) -> DataSplits:
    """``splits`` with a class-balanced training subset of ``n`` images (all when None)."""
    if n is None or n >= len(splits.train):
        return splits
    idx = class_balanced_indices(splits.train.labels, n, seed)
    return DataSplits(train=splits.train.select(idx), test=splits.test, source=splits.source, digest=splits.digest)
