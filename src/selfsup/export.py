"""Export a run's encoder for use elsewhere: safetensors, and a torchvision-ready state dict.

``selfsup export RUN_DIR`` writes into ``RUN_DIR/export/``::

    backbone.safetensors   the encoder's tensors (safe to load: no pickle)
    backbone.pt            the same as a plain state dict (torch.load(..., weights_only=True))
    backbone.json          architecture, feature size, input normalisation, how to rebuild it

For the ResNet backbones the keys are torchvision's: after replacing ``conv1`` by the
CIFAR stem (3x3, stride 1) and ``maxpool`` by ``Identity``, ``load_state_dict(...,
strict=False)`` leaves only ``fc`` missing.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from .errors import RunDirError
from .eval import load_run_model
from .models import feature_dim
from .train.rundir import write_atomic

TORCHVISION_RECIPE = (
    "import torch, torchvision; from torch import nn; "
    "m = torchvision.models.{arch}(weights=None); m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False); "
    "m.maxpool = nn.Identity(); m.fc = nn.Identity(); "
    "m.load_state_dict(torch.load('backbone.pt', weights_only=True))"
)


def export_run(run_dir: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Write the encoder of a run's newest checkpoint (see the module docstring).

    Args:
        run_dir: A run directory with a checkpoint.
        out: Destination folder (default ``RUN_DIR/export``).

    Returns:
        The metadata written to ``backbone.json`` (with the paths written).
    """
    from safetensors.torch import save as save_safetensors

    run_dir = Path(run_dir)
    cfg, model, state = load_run_model(run_dir, "cpu")
    backbone = model.backbone
    assert isinstance(backbone, torch.nn.Module)
    tensors = {k: v.detach().contiguous().clone() for k, v in backbone.state_dict().items()}
    dest = Path(out) if out is not None else run_dir / "export"
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create export folder {dest} ({e.strerror or e})") from None
    arch = cfg.model.backbone
    meta: dict[str, Any] = {
        "backbone": arch,
        "width": cfg.model.width,
        "feature_dim": feature_dim(backbone),
        "image_size": cfg.data.image_size,
        "mean": cfg.augment.mean,
        "std": cfg.augment.std,
        "method": cfg.method.name,
        "checkpoint_step": state.get("step"),
        "classes": state.get("classes"),
        "input": "RGB in [0, 1], normalised with mean/std, (N, 3, H, W)",
    }
    if arch.startswith("resnet"):
        meta["torchvision"] = TORCHVISION_RECIPE.format(arch=arch)
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    write_atomic(dest / "backbone.safetensors", save_safetensors(tensors, metadata={"backbone": arch}))
    write_atomic(dest / "backbone.pt", buffer.getvalue())
    write_atomic(dest / "backbone.json", (json.dumps(meta, indent=2) + "\n").encode())
    meta["files"] = [str(dest / n) for n in ("backbone.safetensors", "backbone.pt", "backbone.json")]
    return meta
