"""Training: the loop, its step and state, the semi-supervised sampler.

:func:`selfsup.pretrain` (in :mod:`selfsup.pretraining`) drives it; run directories and
checkpoints are :mod:`selfsup.rundir` and :mod:`selfsup.checkpoint`.
"""

from .loop import Interrupted, resolve_config
from .step import train_step

__all__ = ["Interrupted", "resolve_config", "train_step"]
