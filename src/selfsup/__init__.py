"""selfsup: self-supervised and semi-supervised representation learning on images.

Everything the command line does is a function here::

    import selfsup
    cfg = selfsup.load_config("configs/quick.yaml", {"train.epochs": 2})
    result = selfsup.pretrain(cfg, out="runs/quick")   # trains, then evaluates
    selfsup.evaluate_run("runs/quick")                 # kNN + linear probe again

Names are imported on first use, so that ``selfsup --help`` (and anything else that
needs only the config) starts without loading PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

#: Public name -> the module that defines it.
_EXPORTS = {
    "Config": ".config",
    "apply_overrides": ".config",
    "load_config": ".config",
    "save_config": ".config",
    "load_dataset": ".data",
    "embed": ".embed",
    "EmbedOptions": ".embed",
    "finetune": ".eval.finetune",
    "embed_query": ".embed",
    "evaluate_run": ".eval",
    "RunResult": ".pretraining",
    "pretrain": ".pretraining",
}

__all__ = [
    "Config",
    "EmbedOptions",
    "RunResult",
    "__version__",
    "apply_overrides",
    "embed",
    "embed_query",
    "evaluate_run",
    "finetune",
    "load_config",
    "load_dataset",
    "pretrain",
    "save_config",
]

if TYPE_CHECKING:
    from .config import Config, apply_overrides, load_config, save_config
    from .data import load_dataset
    from .embed import EmbedOptions, embed, embed_query
    from .eval import evaluate_run
    from .eval.finetune import finetune
    from .pretraining import RunResult, pretrain


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'selfsup' has no attribute {name!r}")
