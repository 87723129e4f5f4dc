"""Every registered backbone, the pre-activation ResNet's shape, torchvision compatibility, heads."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from selfsup.errors import ConfigError
from selfsup.models import BACKBONES, PreActResNetCifar, ProjectionHead, build_backbone, torchvision_target

#: (backbone, width, stem) for every registered backbone and stem, plus a non-default width.
VARIANTS = [(name, 1.0, stem) for name, spec in sorted(BACKBONES.items()) for stem in spec.stems] + [
    ("preact_resnet8", 2, "cifar"),
    ("mobilenet_v2", 0.5, "cifar"),
]


@pytest.mark.parametrize("name,width,stem", VARIANTS, ids=[f"{n}-w{w}-{s}" for n, w, s in VARIANTS])
def test_every_backbone_shapes_values_gradients(name: str, width: float, stem: str) -> None:
    torch.manual_seed(0)
    net = build_backbone(name, width, stem)
    x = torch.randn(2, 3, 32, 32)
    out = net(x)
    # The registry's metadata says the feature size without building the model.
    assert out.shape == (2, net.feature_dim) == (2, BACKBONES[name].feature_dim(width))
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [
        n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())
    ]
    assert not missing, missing
    assert any(float(p.grad.abs().sum()) > 0 for p in net.parameters() if p.grad is not None)
    # channels_last gives the same result.
    net.eval()
    with torch.no_grad():
        a = net(x)
        b = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_preact_resnet26_is_the_seed_encoder() -> None:
    net = build_backbone("preact_resnet26")
    assert isinstance(net, PreActResNetCifar) and net.feature_dim == 64
    blocks = [m for m in net.modules() if m.__class__.__name__ == "PreActBlock"]
    assert len(blocks) == 12  # 4 per stage: (26 - 2) / 6
    assert [s[0].conv1.out_channels for s in (net.layer1, net.layer2, net.layer3)] == [16, 32, 64]
    # The seed's block: bn1, relu1, conv1, bn2, relu2, conv2 (pre-activation).
    assert [n for n, _ in blocks[0].named_children()][:6] == ["bn1", "relu1", "conv1", "bn2", "relu2", "conv2"]
    assert build_backbone("preact_resnet26", width=2).feature_dim == 128


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_cifar_resnet_state_dict_loads_into_torchvision(arch: str) -> None:
    ours = build_backbone(arch).eval()
    ref = getattr(torchvision.models, arch)(weights=None)
    ref.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    ref.maxpool = nn.Identity()
    missing, unexpected = ref.load_state_dict(ours.state_dict(), strict=False)
    assert unexpected == [] and sorted(missing) == ["fc.bias", "fc.weight"]
    ref.fc = nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref.eval()(x))
    assert ours.conv1.kernel_size == (3, 3) and ours.conv1.stride == (1, 1)


@pytest.mark.parametrize("name,width,stem", VARIANTS, ids=[f"{n}-w{w}-{s}" for n, w, s in VARIANTS])
def test_state_dict_loads_into_the_registered_torchvision_target(name: str, width: float, stem: str) -> None:
    spec = BACKBONES[name]
    ours = build_backbone(name, width, stem).eval()
    if spec.torchvision is None:
        with pytest.raises(ConfigError, match="no torchvision counterpart"):
            torchvision_target(name, width, stem)
        return
    ref = torchvision_target(name, width, stem).eval()
    assert isinstance(ref, getattr(torchvision.models, type(ref).__name__))  # a plain torchvision model
    assert ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


def test_cifar_and_imagenet_stems_downsample_as_their_papers() -> None:
    shapes = {}
    for stem in ("cifar", "imagenet"):
        net = build_backbone("resnet18", stem=stem).eval()
        feats: list[torch.Size] = []
        net.layer1.register_forward_hook(lambda _m, _i, o, f=feats: f.append(o.shape))
        net(torch.randn(1, 3, 32, 32))
        shapes[stem] = feats[0][-1]
    assert shapes == {"cifar": 32, "imagenet": 8}  # stride-1 3x3 stem vs 7x7/2 conv + max-pool
    mobile = build_backbone("mobilenet_v2", stem="cifar").eval()
    assert mobile.features[0][0].stride == (1, 1) and mobile.features[2].conv[1][0].stride == (1, 1)
    assert build_backbone("mobilenet_v2", stem="imagenet").features[0][0].stride == (2, 2)


def test_unknown_backbone_and_bad_width() -> None:
    with pytest.raises(ConfigError, match="unknown backbone 'resnet19'"):
        build_backbone("resnet19")
    with pytest.raises(ConfigError, match="width"):
        build_backbone("resnet18", width=2)
    with pytest.raises(ConfigError, match="whole number"):
        build_backbone("preact_resnet8", width=1.5)
    with pytest.raises(ConfigError, match="stem 'imagenet' is not available for preact_resnet8"):
        build_backbone("preact_resnet8", stem="imagenet")


@pytest.mark.parametrize(
    "sizes,bn,n_linear", [([64, 64, 32], False, 2), ([512, 2048, 2048, 128], True, 3), ([8, 4], True, 1)]
)
def test_projection_head(sizes: list[int], bn: bool, n_linear: int) -> None:
    head = ProjectionHead(sizes, batch_norm=bn)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == list(zip(sizes[:-1], sizes[1:]))
    assert len(linears) == n_linear
    assert sum(isinstance(m, nn.BatchNorm1d) for m in head) == (n_linear - 1 if bn else 0)
    assert not isinstance(head[-1], (nn.ReLU, nn.BatchNorm1d))
    assert head(torch.randn(4, sizes[0])).shape == (4, sizes[-1])
    with pytest.raises(ValueError):
        ProjectionHead([])
    x = torch.randn(4, 8)
    assert torch.equal(ProjectionHead([8])(x), x) and ProjectionHead([8]).sizes == [8]  # no head: the identity
