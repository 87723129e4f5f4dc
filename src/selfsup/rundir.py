"""Run directories: creation rules, atomic writes, metrics files.

A run directory holds::

    config.yaml      the resolved config (every value, presets expanded)
    metrics.jsonl    one JSON record per log interval, epoch, monitor and summary
    metrics.json     final evaluation results (kNN, linear probe, fine-tuning, ...)
    checkpoints/     step-<N>.pt, the newest few
    .lock            held by the one process working in the run (see :func:`run_lock`)
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .config import Config, config_from_dict
from .errors import RunDirError
from .fileio import write_atomic

CONFIG = "config.yaml"
METRICS_JSONL = "metrics.jsonl"
METRICS_JSON = "metrics.json"
CHECKPOINTS = "checkpoints"
LOCK = ".lock"

#: Run directories this process holds the lock of: resolved path -> (fd, depth). Module
#: state on purpose: a lock belongs to the process, and pretrain's own evaluation and a
#: sweep's fine-tuning re-enter the lock they already hold.
_HELD: dict[Path, list[int]] = {}


def default_run_dir(method: str, backbone: str, root: str | Path = "runs") -> Path:
    """``runs/<method>-<backbone>-<YYYYmmdd-HHMMSS>``."""
    return Path(root) / f"{method}-{backbone}-{time.strftime('%Y%m%d-%H%M%S')}"


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` looks like a selfsup run (it has a config.yaml)."""
    return (path / CONFIG).is_file()


def load_run_config(run_dir: Path) -> Config:
    """The resolved config saved in a run directory.

    Raises:
        RunDirError: If ``run_dir`` is not a run.
        ConfigError: If its config.yaml is malformed.
    """
    path = run_dir / CONFIG
    if not path.is_file():
        what = "does not exist" if not run_dir.exists() else f"is not a selfsup run (no {CONFIG})"
        raise RunDirError(f"run directory {run_dir} {what}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RunDirError(f"{path}: not valid YAML ({e})") from None
    return config_from_dict(raw, str(path))


def _check_writable(path: Path) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise RunDirError(f"run directory {path} is not writable ({e.strerror or e})") from None


def prepare_run_dir(path: Path, resume: bool, overwrite: bool) -> bool:
    """Create or reuse a run directory; never clobber one unless asked.

    Args:
        path: The run directory.
        resume: Continue the run already in ``path`` (a fresh start if there is none).
        overwrite: Delete the run in ``path`` and start over.

    Returns:
        True when ``path`` holds a run to continue.

    Raises:
        RunDirError: If ``path`` holds something and neither flag allows it, if it holds
            something other than a run and would be deleted, or is not writable.
    """
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite contradict each other; pass one")
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run directory {path} exists and is a file")
    occupied = path.is_dir() and any(p.name != LOCK for p in path.iterdir())
    if occupied:
        if resume:
            if not is_run_dir(path):
                raise RunDirError(f"{path} is not a selfsup run directory (no {CONFIG}); cannot resume it")
            _check_writable(path)
            return True
        if overwrite:
            if not is_run_dir(path):
                raise RunDirError(f"{path} is not a selfsup run directory (no {CONFIG}); refusing to delete it")
            _check_writable(path)
            for item in path.iterdir():  # everything but the lock this process holds
                if item.name != LOCK:
                    shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
        else:
            raise RunDirError(
                f"run directory {path} already exists; pass --resume to continue it or --overwrite to start over"
            )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create run directory {path} ({e.strerror or e})") from None
    _check_writable(path)
    return False


def _refuse(path: Path, fd: int) -> RunDirError:
    holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
    return RunDirError(
        f"run directory {path} is in use by {holder}; wait for it to end or stop it, "
        "then run this again (the lock ends with its process)"
    )


def check_not_busy(path: Path) -> None:
    """Refuse early (before loading data) if another process works in ``path``.

    Only a courtesy: the lock itself is taken by :func:`run_lock`.
    """
    lock = path / LOCK
    if path.resolve() in _HELD or not lock.is_file():
        return
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise _refuse(path, fd) from None
    finally:
        os.close(fd)


@contextmanager
def run_lock(path: Path, what: str) -> Iterator[None]:
    """Hold ``path/.lock`` while working in a run directory: one writer per run.

    The lock is an advisory ``flock`` that the kernel drops when its process ends, so a
    killed holder never leaves a stale lock. Re-entrant within one process.

    Args:
        path: The run directory (created if missing).
        what: What this process does there, shown to a second process that is refused.

    Raises:
        RunDirError: If another process holds the lock (naming it), or the directory
            cannot be created.
    """
    key = path.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run directory {path} exists and is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise RunDirError(f"cannot create run directory {path} ({e.strerror or e})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        error = _refuse(path, fd)
        os.close(fd)
        raise error from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()} ({what}, since {time.strftime('%Y-%m-%d %H:%M:%S')})".encode(), 0)
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[key]
        os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor releases the flock


@contextmanager
def existing_run_lock(path: Path, what: str) -> Iterator[None]:
    """:func:`run_lock` for a run that must already exist (evaluation, fine-tuning, export).

    Raises:
        RunDirError: If ``path`` is not a run, or another process works in it.
    """
    path = Path(path)
    if not is_run_dir(path):
        load_run_config(path)  # raises the error that says what is wrong
    with run_lock(path, what):
        yield


_F = TypeVar("_F", bound=Callable[..., Any])


def locked(what: str) -> Callable[[_F], _F]:
    """Decorate a function whose first argument is a run directory to hold its lock."""

    def wrap(func: _F) -> _F:
        @functools.wraps(func)
        def inner(run_dir: str | Path, *args: Any, **kwargs: Any) -> Any:
            with existing_run_lock(Path(run_dir), what):
                return func(run_dir, *args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines file; a torn last line (from a kill) is ignored."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def truncate_jsonl(path: Path, max_step: int) -> None:
    """Drop records logged after ``max_step`` (they are replayed after a resume)."""
    records = [r for r in read_jsonl(path) if r.get("step", 0) <= max_step]
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in records).encode())


def _read_json(path: Path) -> dict[str, Any]:
    """The mapping in a JSON file; empty when it is missing or torn."""
    try:
        current = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}
    return current if isinstance(current, dict) else {}


def update_metrics_json(run_dir: Path, values: dict[str, Any], section: str | None = None) -> dict[str, Any]:
    """Merge ``values`` into ``run_dir/metrics.json`` (atomically) and return the result.

    With ``section``, the values go into the nested mapping of that name (which keeps its
    other entries), e.g. ``{"finetune": {"1000": {...}, "300": {...}}}``.
    """
    path = run_dir / METRICS_JSON
    # Fine-tunings of one encoder may finish at the same moment in several processes:
    # each merges its entry under this lock, so none is lost.
    fd = os.open(run_dir / ".metrics.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        current = _read_json(path)
        if section is None:
            current.update(values)
        else:
            nested = current.get(section)
            current[section] = {**(nested if isinstance(nested, dict) else {}), **values}
        write_atomic(path, (json.dumps(current, indent=2) + "\n").encode())
    finally:
        os.close(fd)
    return current
