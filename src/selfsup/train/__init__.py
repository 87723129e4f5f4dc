"""Training: the loop, run directories and checkpoints."""

from .checkpoint import load_checkpoint, load_latest, save_checkpoint
from .loop import Interrupted, RunResult, pretrain, resolve_config, train_step
from .rundir import load_run_config, prepare_run_dir

__all__ = [
    "Interrupted",
    "RunResult",
    "load_checkpoint",
    "load_latest",
    "load_run_config",
    "prepare_run_dir",
    "pretrain",
    "resolve_config",
    "save_checkpoint",
    "train_step",
]
