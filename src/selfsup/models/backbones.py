"""Backbone encoders and their registry.

Every backbone maps images ``(B, 3, H, W)`` to features ``(B, feature_dim)`` and exposes
``feature_dim``. A registry entry (:class:`BackboneSpec`) carries what other code needs
to know about it: its feature size for a width, the stems and widths it takes, and the
torchvision model its exported weights load into; nothing elsewhere special-cases
backbone names. Register a new one with :func:`register_backbone`; tests are
parametrised over :data:`BACKBONES`, so a registered entry is tested automatically.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from ..errors import ConfigError

STEMS = ("cifar", "imagenet")


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone and what other code needs to know about it.

    Attributes:
        name: The registry key (``model.backbone``).
        factory: ``factory(width, stem) -> nn.Module`` with a ``feature_dim`` attribute.
        feature_dim: Feature size for a width multiplier.
        stems: The ``model.stem`` values it takes ('cifar': 3x3 stride-1 first layer for
            32x32 images; 'imagenet': the original downsampling stem).
        integer_width: Whether the width multiplier must be a whole number.
        torchvision: The torchvision constructor whose model the exported state dict
            loads into (after :func:`torchvision_target` adapts its stem), or None.
        source: Where the architecture comes from (for the README and reports).
    """

    name: str
    factory: Callable[[float, str], nn.Module]
    feature_dim: Callable[[float], int]
    stems: tuple[str, ...] = ("cifar",)
    integer_width: bool = True
    torchvision: str | None = None
    source: str = ""


#: name -> its :class:`BackboneSpec`.
BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone to :data:`BACKBONES` (one line per backbone)."""
    if spec.name in BACKBONES:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    BACKBONES[spec.name] = spec
    return spec


def backbone_spec(name: str) -> BackboneSpec:
    """The registry entry of ``name``; :class:`ConfigError` naming the known ones if missing."""
    if name not in BACKBONES:
        known = ", ".join(sorted(BACKBONES))
        raise ConfigError(f"unknown backbone {name!r} (model.backbone); known: {known}")
    return BACKBONES[name]


def build_backbone(name: str, width: float = 1, stem: str = "cifar") -> nn.Module:
    """Build a registered backbone.

    Args:
        name: A key of :data:`BACKBONES`, e.g. ``"preact_resnet26"`` or ``"resnet18"``.
        width: Width multiplier (whole numbers for the ResNets, 1 for torchvision's).
        stem: 'cifar' or 'imagenet' (see :class:`BackboneSpec`).

    Returns:
        The module; ``module.feature_dim`` is the size of its output features.

    Raises:
        ConfigError: If the name is not registered, or the width or stem does not fit it.
    """
    spec = backbone_spec(name)
    if width <= 0 or (spec.integer_width and float(width) != int(width)):
        kind = "a positive whole number" if spec.integer_width else "positive"
        raise ConfigError(f"model.width must be {kind} for {name}, got {width}")
    if stem not in spec.stems:
        raise ConfigError(f"model.stem {stem!r} is not available for {name} (it takes {', '.join(spec.stems)})")
    return spec.factory(width, stem)


def feature_dim(backbone: nn.Module) -> int:
    """The size of a backbone's output features."""
    return int(backbone.feature_dim)  # type: ignore[arg-type]


def torchvision_target(name: str, width: float = 1, stem: str = "cifar") -> nn.Module:
    """The torchvision model that ``name``'s exported weights load into (features out).

    Raises:
        ConfigError: If ``name`` has no torchvision counterpart.
    """
    spec = backbone_spec(name)
    if spec.torchvision is None:
        raise ConfigError(f"backbone {name} has no torchvision counterpart; load its weights with selfsup")
    return _torchvision(spec.torchvision, width, stem)


def _torchvision(arch: str, width: float, stem: str) -> nn.Module:
    """Torchvision's ``arch`` adapted to ``stem``, with its classifier replaced by Identity."""
    if arch.startswith("mobilenet_v2"):
        net = torchvision.models.mobilenet_v2(weights=None, width_mult=width)
        if stem == "cifar":
            # 32x32 inputs: no stride in the first conv nor in the first 24-channel block
            # (the usual CIFAR MobileNetV2, 8x downsampling instead of 32x).
            net.features[0][0].stride = (1, 1)
            net.features[2].conv[1][0].stride = (1, 1)
        net.classifier = nn.Identity()
        return net
    net = getattr(torchvision.models, arch)(weights=None)
    if stem == "cifar":
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


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


def _preact(depth: int, width: float, stem: str) -> nn.Module:
    return PreActResNetCifar(depth=depth, width=int(width))


for _depth in (8, 20, 26, 56):
    register_backbone(
        BackboneSpec(
            f"preact_resnet{_depth}",
            functools.partial(_preact, _depth),
            feature_dim=lambda width: 64 * int(width),
            source="seed 000 (pre-activation ResNet for 32x32, 16/32/64 channels)",
        )
    )


# --------------------------------------------------------------------------------------
# torchvision ResNets (CIFAR or ImageNet stem) and MobileNetV2.


def _torchvision_backbone(arch: str, width: float, stem: str) -> nn.Module:
    """Torchvision's ``arch`` without its classifier; module names stay torchvision's.

    So ``state_dict()`` loads into :func:`torchvision_target` of the same name.
    """
    if arch.startswith("resnet") and width != 1:
        raise ConfigError(f"model.width applies to the preact_resnet and mobilenet_v2 backbones; {arch} takes 1")
    net = _torchvision(arch, width, stem)
    conv1 = getattr(net, "conv1", None)
    if isinstance(conv1, nn.Conv2d) and stem == "cifar":
        nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
    net.feature_dim = _FEATURES[arch](width)  # type: ignore[assignment]
    return net


def _mobilenet_features(width: float) -> int:
    # torchvision's last layer: 1280 x max(1, width), rounded to a multiple of 8.
    from torchvision.models._utils import _make_divisible

    return int(_make_divisible(1280 * max(1.0, width), 8))


_FEATURES: dict[str, Callable[[float], int]] = {
    "resnet18": lambda w: 512,
    "resnet34": lambda w: 512,
    "resnet50": lambda w: 2048,
    "mobilenet_v2": _mobilenet_features,
}

for _arch, _source in (
    ("resnet18", "seeds 001-004, SimCLR's CIFAR ResNet-18"),
    ("resnet34", "seed 002"),
    ("resnet50", "seeds 001 and 004, SimCLR and MoCo"),
):
    register_backbone(
        BackboneSpec(
            _arch,
            functools.partial(_torchvision_backbone, _arch),
            feature_dim=_FEATURES[_arch],
            stems=STEMS,
            torchvision=_arch,
            source=_source,
        )
    )

register_backbone(
    BackboneSpec(
        "mobilenet_v2",
        functools.partial(_torchvision_backbone, "mobilenet_v2"),
        feature_dim=_mobilenet_features,
        stems=STEMS,
        integer_width=False,
        torchvision="mobilenet_v2",
        source="seed 003 (MobileNetV2 for 32x32: no stride in the stem and the first 24-channel block)",
    )
)
