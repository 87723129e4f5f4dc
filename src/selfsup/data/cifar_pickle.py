"""The official CIFAR-10 python release (``cifar-10-batches-py``).

Its batches are Python pickles. Unpickling can run arbitrary code, so they are read
with an unpickler that only rebuilds plain containers and NumPy arrays and refuses any
other global: a booby-trapped file is reported, never executed.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META = "batches.meta"

# What a CIFAR batch legitimately needs to be rebuilt (NumPy 1 and 2 module names).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def safe_unpickle(data: bytes, where: str) -> Any:
    """Unpickle CIFAR batch bytes, allowing only containers and NumPy arrays.

    Raises:
        DataError: If the pickle is corrupt or references anything else.
    """
    try:
        return _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{where}: not a CIFAR batch, or unsafe to load ({e})") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise DataError(f"{where}: corrupt pickle ({type(e).__name__}: {e})") from None


def _key(d: dict[Any, Any], name: str) -> Any:
    for k in (name.encode(), name):
        if k in d:
            return d[k]
    raise KeyError(name)


def parse_batch(data: bytes, where: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images (N, 32, 32, 3) uint8 and labels (N,) int64.

    Raises:
        DataError: If fields are missing, shaped wrongly, or labels are out of range.
    """
    d = safe_unpickle(data, where)
    try:
        raw = np.asarray(_key(d, "data"))
        labels = np.asarray(_key(d, "labels"), dtype=np.int64)
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{where}: missing or malformed field in CIFAR batch ({e})") from None
    if raw.dtype != np.uint8 or raw.ndim != 2 or raw.shape[1] != 3072 or len(raw) != len(labels):
        raise DataError(
            f"{where}: expected uint8 data of shape (N, 3072) and N labels, got {raw.shape} and {labels.shape}"
        )
    bad = (labels < 0) | (labels >= n_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{where}: label {int(labels[i])} at index {i} is out of range 0..{n_classes - 1}")
    images = raw.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read_folder(folder: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Read a ``cifar-10-batches-py`` folder: ``({'train': (x, y), 'test': (x, y)}, classes)``."""
    meta_path = folder / META
    if not meta_path.is_file():
        raise DataError(f"{folder}: not a CIFAR-10 python folder ({META} missing)")
    meta = safe_unpickle(meta_path.read_bytes(), str(meta_path))
    try:
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in _key(meta, "label_names")]
    except (KeyError, TypeError) as e:
        raise DataError(f"{meta_path}: no label_names ({e})") from None
    splits = {}
    for split, names in (("train", TRAIN_BATCHES), ("test", [TEST_BATCH])):
        parts = []
        for name in names:
            p = folder / name
            if not p.is_file():
                raise DataError(f"{folder}: CIFAR batch file {name} is missing")
            parts.append(parse_batch(p.read_bytes(), str(p), len(classes)))
        splits[split] = (np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))
    return splits, classes


def folder_digest(folder: Path) -> str:
    """SHA256 over the batch files' bytes."""
    h = hashlib.sha256()
    for name in [META, *TRAIN_BATCHES, TEST_BATCH]:
        p = folder / name
        if p.is_file():
            h.update(name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def download(root: Path, url: str = URL, timeout: float = 30.0) -> Path:
    """Download and unpack the release into ``root/cifar-10-batches-py``; checks its MD5.

    Raises:
        DataError: When offline, on a checksum mismatch, or on a bad archive.
    """
    root.mkdir(parents=True, exist_ok=True)
    archive = root / ARCHIVE
    if not archive.is_file():
        tmp = archive.with_suffix(".part")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
        except (urllib.error.URLError, OSError) as e:
            tmp.unlink(missing_ok=True)
            raise DataError(
                f"could not download CIFAR-10 from {url} ({e}); without internet access, copy "
                f"{ARCHIVE} into {root} by hand, or use the bundled data (--data cifar10)"
            ) from None
        tmp.rename(archive)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    if md5 != ARCHIVE_MD5:
        raise DataError(f"{archive}: MD5 {md5} does not match the official {ARCHIVE_MD5}; delete it and retry")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(root, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{archive}: cannot unpack ({e})") from None
    return root / FOLDER
