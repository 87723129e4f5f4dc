"""Feature extraction with a frozen encoder, at inference speed."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..augment import normalize
from ..config import Config
from ..runtime import autocast, to_device, use_bf16


def feature_options(cfg: Config, device: torch.device) -> dict[str, Any]:
    """The keyword arguments of :func:`extract_features` that a run's config implies.

    One place decides how a run's images are encoded for evaluation (its normalisation,
    eval batch size, precision and memory layout), so kNN, the linear probe, the monitor,
    fine-tuning and reports all see the same features.
    """
    mean, std = cfg.augment.mean, cfg.augment.std
    assert mean is not None and std is not None, "resolve_config fills augment.mean/std"
    return dict(
        mean=mean,
        std=std,
        device=device,
        batch_size=cfg.eval.batch_size,
        bf16=use_bf16(cfg.train.precision, device),
        channels_last=cfg.train.channels_last,
    )


@torch.inference_mode()
def extract_features(
    encoder: nn.Module,
    images: np.ndarray | torch.Tensor,
    mean: list[float],
    std: list[float],
    device: torch.device,
    batch_size: int = 256,
    bf16: bool = False,
    channels_last: bool = True,
) -> torch.Tensor:
    """Encode un-augmented images in eval mode.

    Args:
        encoder: Maps normalised (B, 3, H, W) to (B, D); put in eval mode here and
            restored to its previous mode afterwards.
        images: uint8 (N, H, W, 3), NumPy or a tensor (on any device).
        mean: Per-channel normalisation mean (fractions of 255).
        std: Per-channel normalisation std.
        device: Where to compute.
        batch_size: Images per forward pass.
        bf16: Use bf16 autocast (features are returned as float32).
        channels_last: Feed channels_last tensors.

    Returns:
        float32 (N, D) features on ``device``.
    """
    was_training = encoder.training
    encoder.eval()
    data = torch.as_tensor(images)
    m = torch.tensor(mean, device=device)
    s = torch.tensor(std, device=device)
    out = []
    try:
        for start in range(0, len(data), batch_size):
            x = to_device(data[start : start + batch_size], device)
            x = normalize(x.permute(0, 3, 1, 2).float().div_(255), m, s)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, bf16):
                out.append(encoder(x).float())
    finally:
        encoder.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0, device=device)
