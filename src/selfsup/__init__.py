"""selfsup: self-supervised and semi-supervised representation learning on images.

Everything the command line does is a function here::

    import selfsup
    cfg = selfsup.load_config("configs/quick.yaml", {"train.epochs": 2})
    result = selfsup.pretrain(cfg, out="runs/quick")   # trains, then evaluates
    selfsup.evaluate_run("runs/quick")                 # kNN + linear probe again
"""

from .config import Config, apply_overrides, load_config, save_config
from .data import load_dataset
from .embed import embed, embed_query
from .eval import evaluate_run
from .train import RunResult, pretrain

__version__ = "0.1.0"

__all__ = [
    "Config",
    "RunResult",
    "__version__",
    "apply_overrides",
    "embed",
    "embed_query",
    "evaluate_run",
    "load_config",
    "load_dataset",
    "pretrain",
    "save_config",
]
