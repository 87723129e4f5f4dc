"""Backbone encoders and their registry.

Every backbone maps images ``(B, 3, H, W)`` to features ``(B, feature_dim)`` and exposes
``feature_dim``. Register a new one with :func:`register_backbone`; tests are
parametrised over :data:`BACKBONES`, so a registered entry is tested automatically.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn

from ..errors import ConfigError

BackboneFactory = Callable[..., nn.Module]

#: name -> factory(width=...) returning a module with a ``feature_dim`` attribute.
BACKBONES: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator that adds a backbone factory to :data:`BACKBONES` under ``name``."""

    def wrap(factory: BackboneFactory) -> BackboneFactory:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        BACKBONES[name] = factory
        return factory

    return wrap


def build_backbone(name: str, width: int = 1) -> nn.Module:
    """Build a registered backbone.

    Args:
        name: A key of :data:`BACKBONES`, e.g. ``"preact_resnet26"`` or ``"resnet18"``.
        width: Channel multiplier (the pre-activation ResNets; must be 1 for the others).

    Returns:
        The module; ``module.feature_dim`` is the size of its output features.

    Raises:
        ConfigError: If the name is not registered or the width is not positive.
    """
    if name not in BACKBONES:
        known = ", ".join(sorted(BACKBONES))
        raise ConfigError(f"unknown backbone {name!r} (model.backbone); known: {known}")
    if width < 1:
        raise ConfigError(f"model.width must be a positive integer, got {width}")
    return BACKBONES[name](width=width)


def feature_dim(backbone: nn.Module) -> int:
    """The size of a backbone's output features."""
    return int(backbone.feature_dim)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# Pre-activation ResNet for 32x32 images (the seed-000 "ResNetCifar").


class _ZeroPadShortcut(nn.Module):
    """Parameter-free shortcut ("option A"): average-pool, then pad new channels with zeros."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = nn.functional.avg_pool2d(x, self.stride)
        if self.extra:
            # Zero channels appended at the end, as in torch.cat([x, x.mul(0)], 1).
            x = nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra))
        return x


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity (or zero-padded) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.shortcut: nn.Module = (
            _ZeroPadShortcut(in_channels, out_channels, stride)
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)."""
        residual = self.conv1(self.relu1(self.bn1(x)))
        residual = self.conv2(self.relu2(self.bn2(residual)))
        return self.shortcut(x) + residual


class PreActResNetCifar(nn.Module):
    """Pre-activation ResNet for 32x32 inputs: depth 6n+2, stages of 16/32/64 x width channels.

    The seed-000 report's encoder (depth 26: four blocks per stage, 64-d features).
    """

    def __init__(self, depth: int = 26, width: int = 1) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ConfigError(f"pre-activation ResNet depth must be 6n+2 >= 8, got {depth}")
        blocks = (depth - 2) // 6
        channels = [16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        stages = []
        in_ch = 16
        for i, out_ch in enumerate(channels):
            layers = []
            for b in range(blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                layers.append(PreActBlock(in_ch, out_ch, stride))
                in_ch = out_ch
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(in_ch)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = in_ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 64 * width)."""
        x = self.conv1(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.pool(self.relu(self.bn(x))).flatten(1)


for _depth in (8, 20, 26, 56):
    register_backbone(f"preact_resnet{_depth}")(lambda width=1, _d=_depth: PreActResNetCifar(depth=_d, width=width))


# --------------------------------------------------------------------------------------
# torchvision ResNets with the CIFAR stem.


def _cifar_resnet(arch: str, width: int) -> nn.Module:
    """A torchvision ResNet with a 3x3 stride-1 stem, no max-pool and no classifier.

    Module names are torchvision's, so ``state_dict()`` loads into a torchvision ResNet
    whose ``conv1`` is replaced the same way (and ``fc`` ignored).
    """
    if width != 1:
        raise ConfigError(f"model.width applies to the preact_resnet backbones only; {arch} takes 1")
    net = getattr(torchvision.models, arch)(weights=None)
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()
    net.feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net


for _arch in ("resnet18", "resnet34", "resnet50"):
    register_backbone(_arch)(lambda width=1, _a=_arch: _cifar_resnet(_a, width))
