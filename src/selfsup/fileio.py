"""Writing files so that a kill never leaves a torn one, with the user's normal permissions.

Every layer writes through here (run directories, checkpoints, exports, embeddings, the
dataset cache), so it depends on nothing else in the package.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def normal_mode(fd: int) -> None:
    """Give a file made by :func:`tempfile.mkstemp` (always 0600) the mode ``open()`` would.

    Without this, a temporary-file-then-rename write leaves results readable by their
    owner alone, which hides them from colleagues on a shared machine.
    """
    os.fchmod(fd, 0o666 & ~umask())


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename over ``path``.

    The file ends with the permissions a plain ``open(path, "w")`` would give it.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        normal_mode(fd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
