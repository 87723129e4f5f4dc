"""The decoded-array cache: a source decoded once is loaded from ``$SELFSUP_CACHE_DIR`` after.

Keys combine the source's digest with every decoding setting, so a changed file or
setting never reuses a stale array; a cache that cannot be written only costs time.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from ..fileio import normal_mode
from .readers import (
    MAX_FILE_MB,
)

#: Bump when decoding changes, so old caches are not reused.
CACHE_VERSION = 1


def cache_dir() -> Path:
    """``$SELFSUP_CACHE_DIR``, else ``$XDG_CACHE_HOME/selfsup``, else ``~/.cache/selfsup``."""
    if os.environ.get("SELFSUP_CACHE_DIR"):
        return Path(os.environ["SELFSUP_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "selfsup"


def cache_file(digest: str, size: int, skip_invalid: bool, test_fraction: float, max_file_mb: float | None) -> Path:
    """Where the decoded arrays of a source with these settings are cached."""
    # The size limit changes what a skip_invalid load keeps, so it is part of the key.
    limit = f"|{max_file_mb}" if max_file_mb != MAX_FILE_MB else ""
    key = hashlib.sha256(f"v{CACHE_VERSION}|{digest}|{size}|{skip_invalid}|{test_fraction}{limit}".encode()).hexdigest()
    return cache_dir() / f"{key[:32]}.npz"


def save_cache(path: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], classes: list[str]) -> None:
    """Write decoded splits atomically; a cache that cannot be written only costs time."""
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


def load_cache(path: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]] | None:
    """The cached splits and classes, or None when missing or damaged (then decode again)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            splits = {"train": (z["train_x"], z["train_y"]), "test": (z["test_x"], z["test_y"])}
            return splits, [str(c) for c in z["classes"]]
    except (OSError, ValueError, KeyError, EOFError):
        return None  # missing or damaged: decode again
