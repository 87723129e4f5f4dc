"""Export a run's encoder for use elsewhere: safetensors, a torchvision-ready state dict, ONNX.

``selfsup export RUN_DIR`` writes into ``RUN_DIR/export/``::

    backbone.safetensors   the encoder's tensors (safe to load: no pickle)
    backbone.pt            the same as a plain state dict (torch.load(..., weights_only=True))
    backbone.json          architecture, feature size, input normalisation, how to rebuild it

``--format onnx`` writes ``backbone.onnx`` instead (input ``images`` (N, 3, H, W),
normalised; output ``features`` (N, D); the batch axis is dynamic) with the same
``backbone.json``. Backbones with a torchvision counterpart (see the registry's
``BackboneSpec.torchvision``) load into it: ``backbone.json`` holds the lines that
rebuild it, and ``load_state_dict`` then leaves nothing missing.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError, RunDirError
from .eval import load_run_model
from .fileio import write_atomic
from .models import backbone_spec, feature_dim
from .rundir import locked

FORMATS = ("safetensors", "onnx")

_RESNET_STEM = "m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False); m.maxpool = nn.Identity(); "
_MOBILENET_STEM = "m.features[0][0].stride = (1, 1); m.features[2].conv[1][0].stride = (1, 1); "


def torchvision_recipe(arch: str, width: float, stem: str) -> str:
    """Python lines that rebuild the exported encoder with torchvision alone."""
    if arch.startswith("mobilenet_v2"):
        build = f"m = torchvision.models.mobilenet_v2(weights=None, width_mult={width}); "
        adapt = (_MOBILENET_STEM if stem == "cifar" else "") + "m.classifier = nn.Identity(); "
    else:
        build = f"m = torchvision.models.{arch}(weights=None); "
        adapt = (_RESNET_STEM if stem == "cifar" else "") + "m.fc = nn.Identity(); "
    return (
        "import torch, torchvision; from torch import nn; "
        + build
        + adapt
        + "m.load_state_dict(torch.load('backbone.pt', weights_only=True))"
    )


def onnx_bytes(backbone: nn.Module, image_size: int) -> bytes:
    """The encoder as an ONNX model with a dynamic batch axis (TorchScript-based exporter)."""
    buffer = io.BytesIO()
    example = torch.randn(1, 3, image_size, image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own deprecation and shapes
        torch.onnx.export(
            backbone.eval(),
            (example,),
            buffer,  # type: ignore[arg-type]
            dynamo=False,
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
            opset_version=17,
        )
    return buffer.getvalue()


@locked("selfsup export")
def export_run(run_dir: str | Path, out: str | Path | None = None, fmt: str = "safetensors") -> dict[str, Any]:
    """Write the encoder of a run's newest checkpoint (see the module docstring).

    Args:
        run_dir: A run directory with a checkpoint.
        out: Destination folder (default ``RUN_DIR/export``).
        fmt: 'safetensors' (safetensors, a plain state dict and backbone.json) or
            'onnx' (backbone.onnx and backbone.json).

    Returns:
        The metadata written to ``backbone.json`` (with the paths written).

    Raises:
        ConfigError: For an unknown format.
        RunDirError: If the run has no checkpoint or the folder cannot be created.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r} (use {' or '.join(FORMATS)})")
    run_dir = Path(run_dir)
    cfg, model, state = load_run_model(run_dir, "cpu")
    backbone = model.backbone
    assert isinstance(backbone, nn.Module)
    dest = Path(out) if out is not None else run_dir / "export"
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create export folder {dest} ({e.strerror or e})") from None
    m = cfg.model
    meta: dict[str, Any] = {
        "backbone": m.backbone,
        "width": m.width,
        "stem": m.stem,
        "feature_dim": feature_dim(backbone),
        "image_size": cfg.data.image_size,
        "mean": cfg.augment.mean,
        "std": cfg.augment.std,
        "method": cfg.method.name,
        "checkpoint_step": state.get("step"),
        "classes": state.get("classes"),
        "input": "RGB in [0, 1], normalised with mean/std, (N, 3, H, W)",
    }
    if backbone_spec(m.backbone).torchvision is not None:
        meta["torchvision"] = torchvision_recipe(m.backbone, m.width, m.stem)
    written = []
    if fmt == "onnx":
        write_atomic(dest / "backbone.onnx", onnx_bytes(backbone, cfg.data.image_size))
        written.append("backbone.onnx")
    else:
        from safetensors.torch import save as save_safetensors

        tensors = {k: v.detach().contiguous().clone() for k, v in backbone.state_dict().items()}
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        write_atomic(dest / "backbone.safetensors", save_safetensors(tensors, metadata={"backbone": m.backbone}))
        write_atomic(dest / "backbone.pt", buffer.getvalue())
        written += ["backbone.safetensors", "backbone.pt"]
    write_atomic(dest / "backbone.json", (json.dumps(meta, indent=2) + "\n").encode())
    meta["files"] = [str(dest / n) for n in [*written, "backbone.json"]]
    return meta
