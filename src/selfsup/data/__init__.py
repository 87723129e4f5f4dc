"""Datasets: resolve a name or path, decode once into uint8 arrays, cache by content digest.

>>> from selfsup.data import load_dataset
>>> splits = load_dataset("cifar10")          # the bundled JPEG tarballs
>>> splits.train.images.shape, splits.test.classes[:2]
((50000, 32, 32, 3), ['airplane', 'automobile'])

Sources (``name``):

* ``cifar10``: ``<data root>/cifar10-jpeg/{train,test}.tar.gz``, SHA256-verified against
  ``SHA256SUMS`` on every load.
* ``cifar10-pickle``: the official python release in ``<data root>/cifar-10-batches-py``
  (downloaded when ``download=True``).
* a path: an ImageFolder directory, a tar of one, a folder of ``train``/``test`` tars,
  or a ``cifar-10-batches-py`` folder.

Decoded arrays are cached in ``$SELFSUP_CACHE_DIR`` (default ``~/.cache/selfsup``) under
a key made from the source's digest and the decoding settings.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from ..fileio import normal_mode
from . import cifar_pickle
from .dataset import DataSplits, ImageDataset, channel_stats, class_balanced_indices
from .readers import (
    MAX_FILE_MB,
    TEST_NAMES,
    TRAIN_NAMES,
    FileRef,
    Layout,
    decode_files,
    layout,
    list_directory,
    read_tar_members,
)

__all__ = [
    "DataSplits",
    "ImageDataset",
    "cache_dir",
    "channel_stats",
    "class_balanced_indices",
    "data_root",
    "load_data",
    "load_dataset",
    "with_subset",
]

#: Bump when decoding changes, so old caches are not reused.
CACHE_VERSION = 1
BUNDLED = "cifar10-jpeg"
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def data_root(root: str | None = None) -> Path:
    """Where named datasets live: ``root``, $SELFSUP_DATA_DIR, ./data, or the checkout's data/."""
    if root:
        return Path(root).expanduser()
    if os.environ.get("SELFSUP_DATA_DIR"):
        return Path(os.environ["SELFSUP_DATA_DIR"]).expanduser()
    candidates = [Path.cwd() / "data"] + [p / "data" for p in Path(__file__).resolve().parents]
    for c in candidates:
        if (c / BUNDLED).is_dir():
            return c
    return Path.cwd() / "data"


def cache_dir() -> Path:
    """``$SELFSUP_CACHE_DIR``, else ``$XDG_CACHE_HOME/selfsup``, else ``~/.cache/selfsup``."""
    if os.environ.get("SELFSUP_CACHE_DIR"):
        return Path(os.environ["SELFSUP_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "selfsup"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _verify_sums(folder: Path) -> None:
    """Check files listed in ``folder/SHA256SUMS``, if that file exists."""
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        return
    for line in sums.read_text().splitlines():
        if not line.strip():
            continue
        expected, name = line.split(maxsplit=1)
        path = folder / name.strip().lstrip("*")
        if not path.is_file():
            raise DataError(f"{path}: listed in {sums} but missing")
        got = _sha256_file(path)
        if got != expected.lower():
            raise DataError(
                f"{path}: SHA256 {got[:16]}... does not match {sums} ({expected[:16]}...); "
                "the file is corrupt or was modified"
            )


def _tar_splits(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.endswith(_TAR_SUFFIXES):
            stem = p.name.split(".")[0].lower()
            if stem in TRAIN_NAMES + TEST_NAMES:
                out[stem] = p
    return out


def _resolve(name: str, root: Path, download: bool) -> tuple[str, Path]:
    """Map a dataset name or path to (kind, path). Kinds: tars, tar, folder, pickle."""
    if name == "cifar10":
        folder = root / BUNDLED
        if not folder.is_dir():
            raise DataError(
                f"bundled CIFAR-10 not found at {folder}; set data.root or $SELFSUP_DATA_DIR to the "
                "folder holding cifar10-jpeg/, or pass --data PATH"
            )
        return "tars", folder
    if name == "cifar10-pickle":
        folder = root / cifar_pickle.FOLDER
        if not (folder / cifar_pickle.META).is_file():
            if not download:
                raise DataError(
                    f"CIFAR-10 python release not found at {folder}; pass --data.download true to "
                    "download it (needs internet access), or use --data cifar10 (bundled)"
                )
            folder = cifar_pickle.download(root)
        return "pickle", folder
    path = Path(name).expanduser()
    if not path.exists():
        raise DataError(f"data path does not exist: {path} (data.name; or use 'cifar10')")
    if path.is_file():
        if path.name.endswith(_TAR_SUFFIXES):
            return "tar", path
        raise DataError(f"{path}: not a dataset (expected a folder or a .tar/.tar.gz archive)")
    if (path / cifar_pickle.META).is_file():
        return "pickle", path
    if (path / cifar_pickle.FOLDER / cifar_pickle.META).is_file():
        return "pickle", path / cifar_pickle.FOLDER
    if _tar_splits(path):
        return "tars", path
    return "folder", path


def _digest(kind: str, path: Path, skip_invalid: bool = False, max_file_mb: float | None = MAX_FILE_MB) -> str:
    h = hashlib.sha256(kind.encode())
    if kind == "tar":
        h.update(_sha256_file(path).encode())
    elif kind == "tars":
        _verify_sums(path)
        for split, p in sorted(_tar_splits(path).items()):
            h.update(f"{split}:{_sha256_file(p)}".encode())
    elif kind == "pickle":
        h.update(cifar_pickle.folder_digest(path).encode())
    else:
        # Hashing every file's bytes would cost a full read of big folders; names, sizes
        # and modification times identify a folder's content well enough for a cache.
        files, dirs = list_directory(path, skip_invalid, max_file_mb)
        for f in files:
            st = (path / f).stat()
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        h.update("|".join(dirs).encode())
    return h.hexdigest()


def _gather(
    kind: str, path: Path, skip_invalid: bool, max_file_mb: float | None
) -> tuple[dict[str, dict[str, list[tuple[str, Path | dict[str, bytes], str]]]], str]:
    """``({split: {class: [(display name, store, rel)]}}, source label)`` of a layout source."""
    units: list[tuple[Layout, Path | dict[str, bytes], str, str]] = []
    if kind == "folder":
        files, dirs = list_directory(path, skip_invalid, max_file_mb)
        units.append((layout(files, dirs, str(path)), path, "", str(path)))
    elif kind == "tar":
        members, dirs = read_tar_members(path, skip_invalid, max_file_mb)
        units.append((layout(list(members), dirs, str(path)), members, "", str(path)))
    else:
        for split, p in sorted(_tar_splits(path).items()):
            members, dirs = read_tar_members(p, skip_invalid, max_file_mb)
            units.append((layout(list(members), dirs, str(p)), members, split, str(p)))
    per_split: dict[str, dict[str, list[tuple[str, Path | dict[str, bytes], str]]]] = {}
    for lay, store, implied, where in units:
        for split, classes in lay.items():
            name = split or implied or "train"
            name = "train" if name in TRAIN_NAMES else ("test" if name in TEST_NAMES else name)
            for cls, files in classes.items():
                entries = per_split.setdefault(name, {}).setdefault(cls, [])
                entries.extend((f"{where}/{f}", store, f) for f in files)
    return per_split, str(path)


def _decode_layout_source(
    kind: str,
    path: Path,
    size: int,
    skip_invalid: bool,
    test_fraction: float,
    progress: bool,
    max_file_mb: float | None = MAX_FILE_MB,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    per_split, where = _gather(kind, path, skip_invalid, max_file_mb)
    if "train" not in per_split:
        raise DataError(f"{where}: no training images found (expected a train split or class folders)")
    classes = sorted(per_split["train"])
    if len(classes) < 2:
        raise DataError(f"{where}: only one class ({classes[0]}) found; classification needs at least two")
    for split, cls_map in per_split.items():
        extra = sorted(set(cls_map) - set(classes))
        if extra:
            raise DataError(f"{where}: class {extra[0]!r} of the {split} split is not among the train classes")
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in ("train", "test"):
        if split in per_split:
            refs = [
                FileRef(name, rel, store, classes.index(cls))
                for cls, entries in sorted(per_split[split].items())
                for name, store, rel in entries
            ]
            out[split] = decode_files(refs, size, skip_invalid, progress, desc=f"decoding {split}")
            if len(out[split][1]) == 0:
                raise DataError(f"{where}: no readable images in the {split} split")
    if "test" not in out:
        x, y = out["train"]
        n_test = max(len(classes), int(round(len(y) * test_fraction)))
        # A fixed seed: the held-out split must not change with the training seed.
        test_idx = class_balanced_indices(y, n_test, seed=0)
        mask = np.zeros(len(y), dtype=bool)
        mask[test_idx] = True
        out = {"train": (x[~mask], y[~mask]), "test": (x[mask], y[mask])}
    return out, classes


def _decode_pickle_source(path: Path, size: int) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    splits, classes = cifar_pickle.read_folder(path)
    if size != 32:
        from PIL import Image

        def resize(x: np.ndarray) -> np.ndarray:
            return np.stack(
                [np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BICUBIC)) for im in x]
            )

        splits = {k: (resize(x), y) for k, (x, y) in splits.items()}
    return splits, classes


def _cache_file(digest: str, size: int, skip_invalid: bool, test_fraction: float, max_file_mb: float | None) -> Path:
    # The size limit changes what a skip_invalid load keeps, so it is part of the key.
    limit = f"|{max_file_mb}" if max_file_mb != MAX_FILE_MB else ""
    key = hashlib.sha256(f"v{CACHE_VERSION}|{digest}|{size}|{skip_invalid}|{test_fraction}{limit}".encode()).hexdigest()
    return cache_dir() / f"{key[:32]}.npz"


def _save_cache(path: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], classes: list[str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        normal_mode(fd)
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                train_x=splits["train"][0],
                train_y=splits["train"][1],
                test_x=splits["test"][0],
                test_y=splits["test"][1],
                classes=np.array(classes, dtype=str),
            )
        os.replace(tmp, path)
    except OSError:
        # A cache that cannot be written (read-only home, full disk) only costs time.
        Path(tmp).unlink(missing_ok=True) if "tmp" in locals() else None


def _load_cache(path: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            splits = {"train": (z["train_x"], z["train_y"]), "test": (z["test_x"], z["test_y"])}
            return splits, [str(c) for c in z["classes"]]
    except (OSError, ValueError, KeyError, EOFError):
        return None  # missing or damaged: decode again


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
    kind, path = _resolve(name, data_root(root), download)
    digest = _digest(kind, path, skip_invalid, max_file_mb)
    cache = _cache_file(digest, image_size, skip_invalid, test_fraction, max_file_mb)
    loaded = _load_cache(cache) if use_cache else None
    if loaded is None:
        if kind == "pickle":
            loaded = _decode_pickle_source(path, image_size)
        else:
            loaded = _decode_layout_source(
                kind, path, image_size, skip_invalid, test_fraction, progress, max_file_mb
            )
        if use_cache:
            _save_cache(cache, *loaded)
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
