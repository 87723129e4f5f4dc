"""Run directories: creation rules, atomic writes, metrics files.

A run directory holds::

    config.yaml      the resolved config (every value, presets expanded)
    metrics.jsonl    one JSON record per log interval, epoch, monitor and summary
    metrics.json     final evaluation results (kNN, linear probe, fine-tuning, ...)
    checkpoints/     step-<N>.pt, the newest few
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, config_from_dict
from ..errors import RunDirError

CONFIG = "config.yaml"
METRICS_JSONL = "metrics.jsonl"
METRICS_JSON = "metrics.json"
CHECKPOINTS = "checkpoints"


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
    occupied = path.is_dir() and any(path.iterdir())
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
            shutil.rmtree(path)
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


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def update_metrics_json(run_dir: Path, values: dict[str, Any], section: str | None = None) -> dict[str, Any]:
    """Merge ``values`` into ``run_dir/metrics.json`` (atomically) and return the result.

    With ``section``, the values go into the nested mapping of that name (which keeps its
    other entries), e.g. ``{"finetune": {"1000": {...}, "300": {...}}}``.
    """
    path = run_dir / METRICS_JSON
    current: dict[str, Any] = {}
    if path.is_file():
        try:
            current = json.loads(path.read_text())
        except json.JSONDecodeError:
            current = {}
    if section is None:
        current.update(values)
    else:
        nested = current.get(section)
        current[section] = {**(nested if isinstance(nested, dict) else {}), **values}
    write_atomic(path, (json.dumps(current, indent=2) + "\n").encode())
    return current
