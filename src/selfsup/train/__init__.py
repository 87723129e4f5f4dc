"""Training: one engine for every stage, its step record, state and samplers.

A stage builds a :class:`Job`, :func:`start` plans and restores it, :func:`fit` trains
it. :func:`selfsup.pretrain` (pretraining and semi-supervised training) and
:func:`selfsup.finetune` drive it; run directories and checkpoints are
:mod:`selfsup.rundir` and :mod:`selfsup.checkpoint`.
"""

from .job import Job
from .loop import Interrupted, fit, resolve_config, start
from .step import StepContext, train_step

__all__ = ["Interrupted", "Job", "StepContext", "fit", "resolve_config", "start", "train_step"]
