"""FixMatch's RandAugment on batches: its draws, and each operation against torchvision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from selfsup.augment import BatchAugment, resolve_augment
from selfsup.augment import randaugment as ra
from selfsup.config import AugmentConfig


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g)


def to_u8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().to(torch.uint8)


def test_draws_choose_every_op_uniformly_within_its_range() -> None:
    n = 14000
    p = ra.sample(n, 2, 0.5, 32, 32, torch.Generator().manual_seed(0))
    counts = np.bincount(p.ops.flatten().numpy(), minlength=len(ra.OPS))
    expected = 2 * n / len(ra.OPS)
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected)), counts
    for index, (name, lo, hi) in enumerate(ra.OPS):
        m = p.magnitudes[p.ops == index].double().numpy()
        assert m.min() >= lo - 1e-6 and m.max() <= hi + 1e-6, name
        # Uniform: the mean and the spread of a uniform on [lo, hi].
        assert abs(m.mean() - (lo + hi) / 2) < 0.05 * (hi - lo), name
        assert abs(m.std() - (hi - lo) / np.sqrt(12)) < 0.05 * (hi - lo), name
    sides = p.cutout[:, 2].double().numpy()
    assert sides.min() >= 1 and sides.max() <= 16 and abs(sides.mean() - 8) < 0.5  # uniform up to 0.5 x 32
    rows, cols = p.cutout[:, 0].numpy(), p.cutout[:, 1].numpy()
    assert rows.min() >= 0 and rows.max() < 32 and abs(rows.mean() - 15.5) < 0.5 and abs(cols.mean() - 15.5) < 0.5


def test_pixel_operations_match_torchvision() -> None:
    x = images()
    u8 = to_u8(x)
    xq = u8.float() / 255  # on exact 8-bit levels, as torchvision's uint8 ops see them
    torch.testing.assert_close(ra.autocontrast(x), TF.autocontrast(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(ra.equalize(xq), TF.equalize(u8).float() / 255, atol=0, rtol=0)
    bits = torch.tensor([4, 5, 6, 7, 8, 4], dtype=torch.float32)
    got = ra.posterize(xq, bits)
    for i, b in enumerate(bits.int().tolist()):
        torch.testing.assert_close(got[i], TF.posterize(u8[i], b).float() / 255, atol=0, rtol=0)
    f = torch.linspace(0.05, 0.95, 6)
    got = ra.sharpness(x, f)
    for i in range(6):
        torch.testing.assert_close(got[i], TF.adjust_sharpness(x[i], float(f[i])), atol=1e-5, rtol=0)


def test_apply_runs_each_images_own_ops() -> None:
    x = images(4)
    names = ["identity", "solarize", "brightness", "translate_x"]
    ops = torch.tensor([[ra.NAMES.index(n)] for n in names])
    mags = torch.tensor([[0.0], [0.5], [0.5], [0.25]])
    out = ra.apply(x, ra.RandAugmentParams(ops, mags, torch.zeros(4, 3, dtype=torch.long)))
    torch.testing.assert_close(out[0], x[0])
    torch.testing.assert_close(out[1], TF.solarize(x[1], 0.5))
    torch.testing.assert_close(out[2], TF.adjust_brightness(x[2], 0.5))
    # Translating by a quarter of the width moves the image by 4 of 16 pixels; the gap is gray.
    torch.testing.assert_close(out[3][..., :12], x[3][..., 4:], atol=1e-5, rtol=0)
    assert torch.allclose(out[3][..., 12:], torch.full_like(out[3][..., 12:], ra.GRAY), atol=1e-5)
    # A cutout square of side 4 centred at (8, 8) is gray, the rest untouched.
    box = torch.tensor([[8, 8, 4]] * 4)
    cut = ra.cutout(x, box)
    assert torch.all(cut[:, :, 6:10, 6:10] == ra.GRAY)
    assert torch.equal(cut[:, :, :6], x[:, :, :6]) and torch.equal(cut[:, :, 10:], x[:, :, 10:])


def test_rotation_matches_torchvision_inside_the_image() -> None:
    x = images(2)
    ops = torch.tensor([[ra.NAMES.index("rotate")]] * 2)
    out = ra.apply(x, ra.RandAugmentParams(ops, torch.tensor([[30.0], [-30.0]]), torch.zeros(2, 3, dtype=torch.long)))
    for i, angle in enumerate([30.0, -30.0]):
        ref = TF.rotate(x[i], angle, interpolation=TF.InterpolationMode.BILINEAR, fill=ra.GRAY)
        # Away from the corners both interpolate the same points (edge handling differs).
        inner = (slice(None), slice(4, 12), slice(4, 12))
        torch.testing.assert_close(out[i][inner], ref[inner], atol=2e-2, rtol=0)


@pytest.mark.parametrize("n", [1, 2])
def test_strong_view_through_the_batch_augmentation(n: int) -> None:
    cfg = resolve_augment(
        AugmentConfig(preset="supervised", randaugment_n=n, cutout=0.5, mean=[0.5] * 3, std=[0.25] * 3), "supervised"
    )
    imgs = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8)
    a = BatchAugment(cfg)(imgs, torch.Generator().manual_seed(3))
    b = BatchAugment(cfg)(imgs, torch.Generator().manual_seed(3))
    assert a.shape == (64, 3, 32, 32) and torch.equal(a, b)  # a function of the generator
    plain = resolve_augment(AugmentConfig(preset="supervised", mean=[0.5] * 3, std=[0.25] * 3), "supervised")
    assert not torch.equal(a, BatchAugment(plain)(imgs, torch.Generator().manual_seed(3)))
    meta = BatchAugment(cfg)(
        torch.empty((8, 32, 32, 3), dtype=torch.uint8, device="meta"), torch.Generator().manual_seed(0)
    )
    assert meta.device.type == "meta"  # no value is read back from the device
