"""Sources: a dataset name or path resolved to a kind, its digest, and its files decoded.

Kinds: ``tar`` (one archive), ``tars`` (a folder of ``train``/``test`` archives, as the
bundled CIFAR-10 with its ``SHA256SUMS``), ``pickle`` (the official CIFAR-10 python
release) and ``folder`` (an ImageFolder tree). Archives and folders are listed by
:mod:`selfsup.data.readers`, which refuses entries that are not regular files inside them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from . import cifar_pickle
from .dataset import class_balanced_indices
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


def resolve_source(name: str, root: Path, download: bool) -> tuple[str, Path]:
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


def source_digest(kind: str, path: Path, skip_invalid: bool = False, max_file_mb: float | None = MAX_FILE_MB) -> str:
    """A digest of a source's content: file hashes for archives, names, sizes and times for folders."""
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


def decode_layout_source(
    kind: str,
    path: Path,
    size: int,
    skip_invalid: bool,
    test_fraction: float,
    progress: bool,
    max_file_mb: float | None = MAX_FILE_MB,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Decode a folder or archive source into ``{split: (images, labels)}`` and its class names."""
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


def decode_pickle_source(path: Path, size: int) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Read the official CIFAR-10 python release, resized when ``size`` is not 32."""
    splits, classes = cifar_pickle.read_folder(path)
    if size != 32:
        from PIL import Image

        def resize(x: np.ndarray) -> np.ndarray:
            return np.stack(
                [np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BICUBIC)) for im in x]
            )

        splits = {k: (resize(x), y) for k, (x, y) in splits.items()}
    return splits, classes
