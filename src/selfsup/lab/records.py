"""Committed records: when a sweep cell's saved run still answers the cell, and when it must run again.

A sweep folder under ``results/`` is committed with its cells' small files (``config.yaml``,
``metrics.json``, ``metrics.jsonl``, ``machine.json``) and without checkpoints, so a
table can be measured over several days and machines: a clone elsewhere holds the
finished cells, and running the sweep there runs only the rest. A cell counts as done
when its record is complete *and* its saved config is the config the spec now asks
for; a cell whose spec value, recipe or scale changed since is run again, and the
sweep says which key changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config, apply_overrides, flatten, resume_free_keys
from ..errors import RunDirError
from ..rundir import CONFIG, METRICS_JSON, load_run_config

#: Keys filled from the training data when a run starts (not set by a recipe), so a
#: wanted config that leaves them unset matches any saved value.
_FROM_DATA = {"augment.mean", "augment.std"}


def resolved(cfg: Config) -> Config:
    """``cfg`` with its method's settings and augmentation preset resolved, as a run saves it (mean and std aside).

    Idempotent: a saved (already resolved) config comes back unchanged.
    """
    from dataclasses import replace

    from ..augment import resolve_augment
    from ..methods import method_class, resolve_method

    cfg = resolve_method(cfg)  # the method's own settings (an old record holds every method's keys)
    return replace(cfg, augment=resolve_augment(cfg.augment, method_class(cfg.method.name).default_augment))


def unread(key: str, command: str, wanted: Config) -> bool:
    """Whether a run of ``command`` with config ``wanted`` never reads ``key``.

    Fine-tuning settings matter only to fine-tuning; the semi-supervised settings (other
    than ``semi.labels``, which makes a run semi-supervised) only to a run with labels.
    A sweep whose semi-supervised rows change their ramp-up therefore keeps its
    pretrained encoder and the rows fine-tuned from it.
    """
    if key.startswith("finetune."):
        return command != "finetune"
    return key.startswith("semi.") and key != "semi.labels" and wanted.semi.labels is None


def config_changes(saved: Config, wanted: Config, command: str | None = None) -> dict[str, tuple[Any, Any]]:
    """The keys on which a saved run's config differs from the config a cell wants.

    Keys that change how a run executes but not what it computes (device, threads,
    logging; :func:`selfsup.config.resume_free_keys`), statistics read from the data and,
    given the cell's ``command``, keys that command never reads (:func:`unread`) are ignored.

    Returns:
        ``{key: (saved value, wanted value)}``; empty when the record answers the cell.
    """
    free = resume_free_keys() | _FROM_DATA
    a, b = flatten(resolved(saved)), flatten(resolved(wanted))
    return {
        k: (a.get(k), b[k])
        for k in b
        if k not in free and a.get(k) != b[k] and not (command and unread(k, command, wanted))
    }


def describe(changes: dict[str, tuple[Any, Any]]) -> str:
    """``train.epochs 6 -> 8 (and 2 more)``."""
    key, (old, new) = next(iter(changes.items()))
    more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
    return f"{key} {old!r} -> {new!r}{more}"


def cell_done(run_dir: Path, command: str) -> bool:
    """Whether a sweep cell's run directory has its final results."""
    path = run_dir / METRICS_JSON
    if not path.is_file():
        return False
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    needed = "test_top1" if command in ("semi", "finetune") else "linear_top1"
    return needed in metrics


@dataclass
class CellState:
    """Where a cell's record stands.

    Attributes:
        status: 'done' (complete and current), 'partial' (started, current; continues
            from its checkpoints where they exist), 'changed' (its saved config differs
            from the wanted one) or 'missing'.
        changes: For 'changed', what differs (see :func:`config_changes`).
    """

    status: str
    changes: dict[str, tuple[Any, Any]]


def cell_state(run_dir: Path, command: str, wanted: Config) -> CellState:
    """Compare a cell's run directory (or committed record) with the config it should have run."""
    if not (run_dir / CONFIG).is_file():
        return CellState("partial" if run_dir.is_dir() and any(run_dir.iterdir()) else "missing", {})
    try:
        saved = load_run_config(run_dir)
    except RunDirError:
        return CellState("changed", {"config.yaml": ("unreadable", "the cell's config")})
    changes = config_changes(_init_in_folder(saved, run_dir.parent), _init_in_folder(wanted, run_dir.parent), command)
    if changes:
        return CellState("changed", changes)
    return CellState("done" if cell_done(run_dir, command) else "partial", {})


def _init_in_folder(cfg: Config, folder: Path) -> Config:
    """``cfg`` with a ``model.init`` inside ``folder`` named by the run's name alone.

    A sweep cell started from the sweep's own encoder saves that encoder's path, which
    depends on where the folder was when it ran (``--out results/x`` or an absolute path,
    another clone): the record still answers the cell wherever the folder is now.
    """
    init = cfg.model.init
    if not init or Path(init).parent.name != folder.name:
        return cfg
    return apply_overrides(cfg, {"model.init": f"<sweep folder>/{Path(init).name}"})


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a run directory holds a checkpoint (committed records do not)."""
    return any((run_dir / "checkpoints").glob("step-*.pt"))


def stale_cells(folder: Path, wanted: set[str], keep: set[str]) -> list[str]:
    """Names of run directories in a sweep folder that the spec no longer has.

    Args:
        folder: The sweep folder.
        wanted: The cells' directory names the spec has now.
        keep: Other directory names that belong to the sweep (the encoders).
    """
    return sorted(
        p.name for p in folder.iterdir() if p.is_dir() and (p / CONFIG).is_file() and p.name not in wanted | keep
    )
