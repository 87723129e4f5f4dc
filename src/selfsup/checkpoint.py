"""Checkpoints: atomic writes, safe loads, fallback to the previous good one.

Writes go to a temporary file that is fsynced and renamed into place, so a kill at any
moment leaves either the old set of checkpoints or the new one, never a torn file under
a checkpoint's name. Loads use ``torch.load(weights_only=True)``: a file that would run
code when unpickled is refused.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .fileio import write_atomic
from .rundir import CHECKPOINTS

_NAME = re.compile(r"^step-(\d+)(\.milestone)?\.pt$")
MILESTONE = ".milestone.pt"


def checkpoint_paths(run_dir: Path) -> list[Path]:
    """Checkpoints of a run (rolling and milestones), newest (highest step) first."""
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def checkpoint_step(path: Path) -> int:
    """The training step a checkpoint file was written at (from its name)."""
    m = _NAME.match(path.name)
    if m is None:
        raise CheckpointError(f"{path} is not named like a selfsup checkpoint (step-<N>.pt)")
    return int(m.group(1))


def milestone_paths(run_dir: Path) -> list[Path]:
    """The milestone checkpoints (``train.checkpoint_every``), oldest first."""
    return [p for p in reversed(checkpoint_paths(run_dir)) if p.name.endswith(MILESTONE)]


def find_checkpoint(run_dir: Path, step: int) -> Path:
    """The checkpoint of ``step``.

    Raises:
        CheckpointError: If the run has none for that step (naming the steps it has).
    """
    paths = checkpoint_paths(run_dir)
    for p in paths:
        if checkpoint_step(p) == step:
            return p
    have = ", ".join(str(checkpoint_step(p)) for p in reversed(paths)) or "none"
    raise CheckpointError(f"{run_dir} has no checkpoint of step {step} (it has: {have})")


def save_checkpoint(run_dir: Path, state: dict[str, Any], step: int, keep: int, milestone: bool = False) -> Path:
    """Write ``state`` as ``checkpoints/step-<step>.pt`` and keep only the newest ``keep``.

    A ``milestone`` is written as ``step-<step>.milestone.pt`` and never deleted; other
    checkpoints older than the newest ``keep`` (milestones included) are.

    Raises:
        CheckpointError: If the write fails (e.g. a full disk); earlier checkpoints are
            left untouched.
    """
    folder = run_dir / CHECKPOINTS
    folder.mkdir(exist_ok=True)
    path = folder / f"step-{step:09d}{MILESTONE if milestone else '.pt'}"
    buf = io.BytesIO()
    torch.save(state, buf)
    try:
        write_atomic(path, buf.getvalue())
    except OSError as e:
        previous = next((p.name for p in checkpoint_paths(run_dir) if p != path), None)
        kept = f"; the previous checkpoint {previous} is intact" if previous else ""
        raise CheckpointError(f"could not write checkpoint {path} ({e.strerror or e}){kept}") from None
    for old in checkpoint_paths(run_dir)[keep:]:  # milestones count among the newest, and stay
        if not old.name.endswith(MILESTONE):
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely.

    Raises:
        CheckpointError: If the file is missing, truncated/corrupt, or contains objects
            other than tensors and plain containers (it is not unpickled then).
    """
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found or "weights_only" in text.lower() or "weights only" in text.lower():
            what = f"it references {found.group(1)}" if found else "it holds objects other than tensors"
            raise CheckpointError(
                f"{path}: refused to load: {what}, which could run code when unpickled; "
                "only open checkpoints you trust with other tools"
            ) from None
        first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        raise CheckpointError(f"{path}: corrupt checkpoint ({first[:160]})") from None

    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({first[:160]})") from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(f"{path}: not a selfsup checkpoint")
    return state


def load_latest(run_dir: Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path] | None:
    """The newest loadable checkpoint of a run, or None if it has none.

    A corrupt newest checkpoint is reported (a warning) and the previous one is used.

    Raises:
        CheckpointError: If checkpoints exist but none can be loaded.
    """
    paths = checkpoint_paths(run_dir)
    errors = []
    for path in paths:
        try:
            state = load_checkpoint(path, map_location)
        except CheckpointError as e:
            errors.append(str(e))
            warnings.warn(f"{e}; trying an earlier checkpoint", stacklevel=2)
            continue
        return state, path
    if errors:
        raise CheckpointError(f"no loadable checkpoint in {run_dir / CHECKPOINTS}: {errors[0]}")
    return None
