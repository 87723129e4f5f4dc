"""Training methods: one file each, and this registry (one line per method).

Every method is a :class:`Method` (see :mod:`selfsup.methods.base`): ``from_config``,
``training_step(batch: Batch) -> {"loss": ..., other scalars}``, optionally
``after_optimizer_step(batch)`` and ``classifiers()``, and class attributes that tell
the loop how many views to augment (each with its own changes, ``view_augment``),
which preset to use, and whether labels are read. Register a new method with
:func:`register_method` (tests parametrised over :data:`METHODS` pick it up).
"""

from __future__ import annotations

from .barlow_twins import BarlowTwins
from .base import Batch, Method
from .byol import BYOL
from .dino import DINO
from .fixmatch import FixMatch
from .mean_teacher import MeanTeacher
from .moco import MoCo
from .pi_model import PiModel
from .registry import METHODS, build_method, method_class, register_method, resolve_method, semi_supervised_methods
from .simclr import SimCLR
from .simsiam import SimSiam
from .supervised import Supervised
from .vicreg import VICReg

register_method("simclr", SimCLR)
register_method("moco", MoCo)
register_method("supervised", Supervised)
register_method("pi", PiModel)
register_method("mean-teacher", MeanTeacher)
register_method("byol", BYOL)
register_method("simsiam", SimSiam)
register_method("barlow-twins", BarlowTwins)
register_method("vicreg", VICReg)
register_method("dino", DINO)
register_method("fixmatch", FixMatch)


__all__ = [
    "BYOL",
    "DINO",
    "FixMatch",
    "METHODS",
    "BarlowTwins",
    "Batch",
    "SimSiam",
    "VICReg",
    "MeanTeacher",
    "Method",
    "MoCo",
    "PiModel",
    "SimCLR",
    "Supervised",
    "build_method",
    "method_class",
    "register_method",
    "resolve_method",
    "semi_supervised_methods",
]
