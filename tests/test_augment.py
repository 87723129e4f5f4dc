"""Batch augmentation against torchvision's per-image transforms."""

from __future__ import annotations

from dataclasses import replace
from itertools import permutations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from selfsup.augment import (
    PRESETS,
    AugmentSpec,
    BatchAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    apply_params,
    color_jitter,
    gaussian_blur,
    grayscale,
    resolve_augment,
    sample_crop_boxes,
    sample_params,
)
from selfsup.augment.batch import fixed_path_supported
from selfsup.config import AugmentConfig
from selfsup.errors import ConfigError


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    return float(
        np.max(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b)))
    )


def resolved(preset: str = "simclr") -> AugmentSpec:
    cfg = resolve_augment(AugmentConfig(preset=preset), preset)
    return AugmentSpec.from_config(replace(cfg, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]))


N = 4000
# 1.95 * sqrt(2 / N) is the KS critical value at alpha = 0.001.
KS_LIMIT = 1.95 * (2 / N) ** 0.5


@pytest.mark.parametrize(
    "hw,scale,ratio",
    [
        ((32, 32), (0.08, 1.0), (3 / 4, 4 / 3)),
        ((32, 32), (0.2, 1.0), (3 / 4, 4 / 3)),
        ((24, 40), (0.5, 1.0), (0.5, 2.0)),
    ],
)
def test_crop_distribution_matches_torchvision(hw: tuple[int, int], scale: tuple, ratio: tuple) -> None:
    h, w = hw
    ours = sample_crop_boxes(N, h, w, scale, ratio, torch.Generator().manual_seed(0)).numpy()
    torch.manual_seed(0)
    img = torch.zeros(3, h, w)
    theirs = np.array([T.RandomResizedCrop.get_params(img, list(scale), list(ratio)) for _ in range(N)])
    for name, f in {
        "area": lambda b: b[:, 2] * b[:, 3] / (h * w),
        "aspect": lambda b: b[:, 3] / b[:, 2],
        "centre_y": lambda b: b[:, 0] + b[:, 2] / 2,
        "centre_x": lambda b: b[:, 1] + b[:, 3] / 2,
    }.items():
        assert ks_statistic(f(ours), f(theirs)) < KS_LIMIT, name
    assert (ours[:, 0] >= 0).all() and (ours[:, 0] + ours[:, 2] <= h).all()
    assert (ours[:, 1] >= 0).all() and (ours[:, 1] + ours[:, 3] <= w).all()


def test_crop_fallback_is_central() -> None:
    # Areas that can never fit force torchvision's central-crop fallback.
    boxes = sample_crop_boxes(50, 10, 40, (1.0, 1.0), (0.1, 0.2), torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    expected = T.RandomResizedCrop.get_params(torch.zeros(3, 10, 40), [1.0, 1.0], [0.1, 0.2])
    assert all(tuple(b.tolist()) == tuple(expected) for b in boxes)


def test_rates_and_jitter_ranges() -> None:
    cfg = resolved("seed000")
    p = sample_params(cfg, N, 32, 32, torch.Generator().manual_seed(3))
    tol = 4 * (0.25 / N) ** 0.5
    assert abs(p.flip.float().mean() - 0.5) < tol
    assert abs(p.gray.float().mean() - 0.2) < tol
    assert abs(p.jitter_applied.float().mean() - 0.8) < tol
    assert abs((p.blur_sigma > 0).float().mean() - 0.5) < tol
    sig = p.blur_sigma[p.blur_sigma > 0]
    assert sig.min() >= 0.1 and sig.max() <= 2.0
    # Factors of jittered samples against torchvision's ColorJitter draws.
    s = cfg.jitter_strength
    cj = T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
    torch.manual_seed(0)
    draws = [cj.get_params(cj.brightness, cj.contrast, cj.saturation, cj.hue) for _ in range(N)]
    theirs = np.array([d[1:] for d in draws], dtype=float)
    ours = p.jitter[p.jitter_applied].numpy()
    for op in range(4):
        assert ks_statistic(ours[:, op], theirs[:, op]) < 1.95 * (1 / len(ours) + 1 / N) ** 0.5, op
    lo, hi = 1 - 0.8 * s, 1 + 0.8 * s
    assert ours[:, :3].min() >= lo and ours[:, :3].max() <= hi
    assert np.abs(ours[:, 3]).max() <= 0.2 * s
    assert (p.jitter[~p.jitter_applied] == torch.tensor([1.0, 1.0, 1.0, 0.0])).all()
    # Op order: a uniformly random permutation per sample, like torchvision's randperm(4).
    counts = np.bincount((p.jitter_order @ torch.tensor([64, 16, 4, 1])).numpy(), minlength=256)
    counts = counts[counts > 0]
    assert len(counts) == 24 and counts.min() > N / 24 * 0.6


def test_samples_in_a_batch_get_different_parameters() -> None:
    p = sample_params(resolved(), 64, 32, 32, torch.Generator().manual_seed(0))
    assert len({tuple(t.flatten().tolist()) for t in p.theta}) > 50
    assert 0 < int(p.flip.sum()) < 64
    assert len(set(p.jitter[p.jitter_applied, 0].tolist())) == int(p.jitter_applied.sum())
    aug = BatchAugment(resolved())
    x = torch.full((8, 32, 32, 3), 120, dtype=torch.uint8).repeat(1, 1, 1, 1)
    x[:, :, :16] = 30  # one identical image eight times
    out = aug(x, torch.Generator().manual_seed(0))
    assert not any(torch.allclose(out[0], out[i]) for i in range(1, 8))


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 12, 10, generator=g)


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (adjust_brightness, TF.adjust_brightness),
        (adjust_contrast, TF.adjust_contrast),
        (adjust_saturation, TF.adjust_saturation),
    ],
)
def test_blend_ops_match_torchvision(ours, theirs) -> None:  # type: ignore[no-untyped-def]
    x = images()
    factors = torch.tensor([0.2, 0.6, 1.0, 1.3, 1.8, 0.0])
    out = ours(x.clone(), factors)
    for i, f in enumerate(factors.tolist()):
        torch.testing.assert_close(out[i], theirs(x[i], f), atol=1e-6, rtol=0)


def test_hue_matches_torchvision() -> None:
    x = images(8)
    x[0] = 0.5  # gray: hue undefined, must stay unchanged
    shifts = torch.tensor([0.3, -0.5, -0.2, -0.05, 0.0, 0.05, 0.25, 0.5])
    out = adjust_hue(x, shifts)
    for i, s in enumerate(shifts.tolist()):
        torch.testing.assert_close(out[i], TF.adjust_hue(x[i], s), atol=2e-5, rtol=0)


def test_grayscale_and_blur_match_torchvision() -> None:
    x = images()
    torch.testing.assert_close(grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0, 0.0, 1.5])
    out = gaussian_blur(x, sigma, 3)
    for i, s in enumerate(sigma.tolist()):
        expected = x[i] if s == 0 else TF.gaussian_blur(x[i], [3, 3], [s, s])
        torch.testing.assert_close(out[i], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "rounds"])
def test_jitter_applies_each_samples_own_order(grouped: bool) -> None:
    cfg = resolved()
    n = 48
    p = sample_params(cfg, n, 12, 10, torch.Generator().manual_seed(5))
    p.jitter_applied[:] = True
    p.jitter = torch.stack(
        [
            torch.linspace(0.4, 1.6, n),
            torch.linspace(1.5, 0.5, n),
            torch.linspace(0.3, 1.7, n),
            torch.linspace(-0.3, 0.3, n),
        ],
        1,
    )
    perms = list(permutations(range(4)))
    p.jitter_order = torch.tensor([perms[i % 24] for i in range(n)])
    x = torch.rand(n, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    out = color_jitter(x, p, grouped=grouped)
    fns = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in range(n):
        y = x[i]
        for op in p.jitter_order[i].tolist():
            y = fns[op](y, float(p.jitter[i, op]))
        torch.testing.assert_close(out[i], y, atol=5e-5, rtol=0)


@pytest.mark.parametrize("strength", [0.5, 0.0], ids=["all-ops", "hue-off"])
def test_jitter_rounds_match_the_grouped_path(strength: float) -> None:
    # The GPU's whole-batch rounds and the CPU's groups must give the same images,
    # including samples left unjittered (exactly unchanged) and ops off for everyone.
    cfg = replace(resolved(), jitter_p=0.6)
    p = sample_params(cfg, 200, 16, 16, torch.Generator().manual_seed(1))
    if strength == 0.0:
        p.jitter[:, 3] = 0.0  # hue shift off in every sample: that op is skipped
    x = torch.rand(200, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    grouped = color_jitter(x, p, grouped=True)
    rounds = color_jitter(x, p, grouped=False)
    torch.testing.assert_close(rounds, grouped, atol=1e-6, rtol=0)
    kept = ~p.jitter_applied
    assert kept.any() and p.jitter_applied.any()
    assert torch.equal(rounds[kept], x[kept])


def test_resized_crop_and_flip_match_torchvision() -> None:
    cfg = replace(resolved(), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    u8 = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = u8.permute(0, 3, 1, 2).float() / 255
    p = sample_params(cfg, 4, 32, 32, torch.Generator().manual_seed(0))
    boxes = [(4, 4, 16, 16), (0, 0, 32, 32), (3, 7, 20, 12), (10, 2, 9, 25)]
    flips = [False, True, True, False]
    for i, ((t, left, h, w), fl) in enumerate(zip(boxes, flips)):
        s = -1.0 if fl else 1.0
        p.theta[i] = torch.tensor([[s * w / 32, 0, (2 * left + w) / 32 - 1], [0, h / 32, (2 * t + h) / 32 - 1]])
        p.flip[i] = fl
    out = apply_params(u8, p, cfg)
    for i, ((t, left, h, w), fl) in enumerate(zip(boxes, flips)):
        ref = TF.resized_crop(x[i], t, left, h, w, [32, 32], antialias=False)
        ref = TF.hflip(ref) if fl else ref
        # Where an output pixel samples inside the crop both interpolate the same pixels;
        # outside it torchvision clamps to the crop's edge while grid_sample reads the
        # neighbouring image pixel. Compare where the sample position lies in the crop.
        pos_y = (torch.arange(32) + 0.5) * h / 32 - 0.5
        pos_x = (torch.arange(32) + 0.5) * w / 32 - 0.5
        rows = (pos_y >= 0) & (pos_y <= h - 1)
        cols = (pos_x >= 0) & (pos_x <= w - 1)
        cols = cols.flip(0) if fl else cols
        assert rows.sum() >= 28 and cols.sum() >= 28
        torch.testing.assert_close(out[i][:, rows][:, :, cols], ref[:, rows][:, :, cols], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], TF.hflip(x[1]), atol=1e-6, rtol=0)


def test_pad_translation_is_an_exact_shift() -> None:
    cfg = replace(resolved("weak"), flip_p=0.0)
    u8 = torch.randint(0, 256, (16, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    p = sample_params(cfg, 16, 32, 32, torch.Generator().manual_seed(2))
    out = apply_params(u8, p, cfg) * 0.25 + 0.5
    x = u8.permute(0, 3, 1, 2).float() / 255
    for i in range(16):
        dx = round(float(p.theta[i, 0, 2]) * 32 / 2)
        dy = round(float(p.theta[i, 1, 2]) * 32 / 2)
        assert abs(dx) <= 2 and abs(dy) <= 2
        src = x[i, :, max(dy, 0) : 32 + min(dy, 0), max(dx, 0) : 32 + min(dx, 0)]
        dst = out[i, :, max(-dy, 0) : 32 + min(-dy, 0), max(-dx, 0) : 32 + min(-dx, 0)]
        torch.testing.assert_close(dst, src, atol=1e-5, rtol=0)


def test_batch_augment_output_and_determinism() -> None:
    aug = BatchAugment(resolved("seed000"))
    u8 = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    a = aug(u8, torch.Generator().manual_seed(7), n_views=2)
    b = aug(u8, torch.Generator().manual_seed(7), n_views=2)
    c = aug(u8, torch.Generator().manual_seed(8), n_views=2)
    assert a.shape == (10, 3, 32, 32) and a.dtype == torch.float32
    assert a.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.allclose(a[:5], a[5:])  # the two views differ
    # Normalised with mean 0.5, std 0.25: values of [0, 1] images land in [-2, 2].
    assert a.min() >= -2 - 1e-5 and a.max() <= 2 + 1e-5


def test_none_preset_only_normalises() -> None:
    cfg = resolved("none")
    u8 = torch.randint(0, 256, (3, 16, 16, 3), dtype=torch.uint8)
    out = BatchAugment(cfg)(u8, torch.Generator().manual_seed(0))
    expected = (u8.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_views_of_another_size_resample_once() -> None:
    # Progressive resizing: the crop's grid has the output's size. With no crop or flip, a
    # 32 px image at 16 px samples between each 2 x 2 block of pixels: their mean.
    cfg = resolved("none")
    u8 = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    out = BatchAugment(cfg)(u8, torch.Generator().manual_seed(0), size=16)
    full = (u8.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(out, torch.nn.functional.avg_pool2d(full, 2), atol=1e-5, rtol=0)
    # Every view of a crop pipeline comes out at the size; the same draws as at full size.
    aug = BatchAugment(resolved("simclr"))
    small = aug(u8, torch.Generator().manual_seed(3), n_views=2, size=24)
    assert small.shape == (6, 3, 24, 24) and small.is_contiguous(memory_format=torch.channels_last)
    strong_cfg = resolve_augment(AugmentConfig(preset="simclr", randaugment_n=2), "simclr")
    strong = BatchAugment(replace(strong_cfg, mean=[0.5] * 3, std=[0.25] * 3))
    with pytest.raises(ValueError, match="RandAugment"):
        strong(u8, torch.Generator().manual_seed(0), size=24)


def test_spec_needs_every_value() -> None:
    with pytest.raises(ValueError, match="mean"):
        AugmentSpec.from_config(resolve_augment(AugmentConfig(), "simclr"))
    BatchAugment(replace(resolve_augment(AugmentConfig(), "simclr"), mean=[0.5] * 3, std=[0.2] * 3))


def test_resolve_fills_from_preset_and_keeps_overrides() -> None:
    cfg = resolve_augment(AugmentConfig(blur_p=0.3), "moco_v2")
    assert cfg.preset == "moco_v2" and cfg.crop_scale == [0.2, 1.0] and cfg.blur_p == 0.3
    assert resolve_augment(AugmentConfig(preset="seed000"), "simclr").blur_p == 0.5
    assert set(PRESETS) >= {"simclr", "seed000", "moco_v2", "weak", "supervised", "none"}


@pytest.mark.parametrize(
    "bad",
    [
        dict(preset="fancy"),
        dict(flip_p=1.5),
        dict(crop_scale=[0.5, 0.1]),
        dict(preset="none", crop="resized"),  # preset none's crop_scale [1, 1]: every crop the whole image
        dict(blur_kernel=4),
        dict(crop="zoom"),
        dict(jitter_strength=-1.0),
    ],
)
def test_resolve_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ConfigError):
        resolve_augment(AugmentConfig(**bad), "simclr")


@pytest.mark.parametrize("size", [None, 24])
@pytest.mark.parametrize(
    "preset,change",
    [(p, {}) for p in sorted(PRESETS)] + [("simclr", {"solarize_p": 0.5, "blur_p": 0.5}), ("weak", {"jitter_p": 0.5})],
    ids=[*sorted(PRESETS), "simclr+solarize+blur", "weak+jitter"],
)
def test_fixed_path_gives_the_per_op_images(preset: str, change: dict, size: int | None) -> None:
    # The GPU's fixed path runs every op on every sample with identity parameters where a
    # sample skips it; it must give the per-op path's images, including the skipped samples.
    cfg = replace(resolved(preset), **change)
    u8 = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    per_op = BatchAugment(cfg, fixed=False)(u8, torch.Generator().manual_seed(4), 2, size=size)
    fixed = BatchAugment(cfg, fixed=True)(u8, torch.Generator().manual_seed(4), 2, size=size)
    assert fixed.shape == per_op.shape and fixed.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fixed, per_op, atol=1e-5, rtol=0)


def test_fixed_path_leaves_the_configs_it_does_not_cover_to_the_per_op_path() -> None:
    cfg = replace(resolved(), randaugment_n=2, cutout=0.5)
    assert not fixed_path_supported(cfg) and fixed_path_supported(resolved())
    u8 = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = BatchAugment(cfg, fixed=True)(u8, torch.Generator().manual_seed(1), 2)
    b = BatchAugment(cfg, fixed=False)(u8, torch.Generator().manual_seed(1), 2)
    assert torch.equal(a, b)


@pytest.mark.parametrize("fixed", [False, True], ids=["per-op", "fixed"])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_augmentation_never_reads_values_back_from_the_device(preset: str, fixed: bool) -> None:
    """The whole batch augmentation runs on 'meta' tensors, which hold no values.

    Reading a value of a device tensor (``bool(t)``, ``.item()``, ``.cpu()``, ``.tolist()``)
    is what synchronises a GPU; on the meta device each of those raises instead. So if the
    real augmentation path runs here, it never reads back from the data's device.
    """
    cfg = resolve_augment(AugmentConfig(preset=preset, mean=[0.5] * 3, std=[0.25] * 3), preset)
    images = torch.empty((6, 32, 32, 3), dtype=torch.uint8, device="meta")
    views = BatchAugment(cfg, fixed=fixed)(images, torch.Generator().manual_seed(0), n_views=2)
    assert views.device.type == "meta" and views.shape == (12, 3, 32, 32)
    with pytest.raises(RuntimeError):  # the check has teeth: a read-back does fail here
        bool(views.sum() > 0)


def test_solarize_matches_torchvision_and_its_rate() -> None:
    from selfsup.augment import solarize

    x = images()
    applied = torch.tensor([True, False, True, True, False, True])
    out = solarize(x, applied)
    for i in range(len(x)):
        expected = TF.solarize(x[i], 0.5) if applied[i] else x[i]
        torch.testing.assert_close(out[i], expected, atol=0, rtol=0)
    cfg = replace(resolved(), solarize_p=0.2)
    p = sample_params(cfg, N, 32, 32, torch.Generator().manual_seed(4))
    assert abs(p.solarize.float().mean() - 0.2) < 4 * (0.16 / N) ** 0.5
    # A preset without solarize draws exactly what it drew before solarize existed.
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    sample_params(resolved(), 8, 32, 32, g1)
    sample_params(replace(resolved(), solarize_p=0.0), 8, 32, 32, g2)
    assert torch.equal(g1.get_state(), g2.get_state()) and not p.solarize.all()


def test_views_with_their_own_augmentation() -> None:
    from selfsup.augment import ViewAugment, view_configs

    base = resolve_augment(AugmentConfig(preset="simclr", mean=[0.5] * 3, std=[0.25] * 3), "simclr")
    # BYOL's asymmetry: always blur the first view, solarize only the second.
    views = view_configs(base, [{"blur_p": 1.0, "solarize_p": 0.0}, {"blur_p": 0.1, "solarize_p": 0.2}], 2)
    assert [v.blur_p for v in views] == [1.0, 0.1] and [v.solarize_p for v in views] == [0.0, 0.2]
    imgs = torch.randint(0, 256, (500, 8, 8, 3), dtype=torch.uint8)
    out = ViewAugment(views)(imgs, torch.Generator().manual_seed(0))
    assert out.shape == (1000, 3, 8, 8)
    # Shared specs draw in one call, exactly like BatchAugment with n_views.
    same = ViewAugment([base, base])(imgs, torch.Generator().manual_seed(1))
    ref = BatchAugment(base)(imgs, torch.Generator().manual_seed(1), n_views=2)
    assert torch.equal(same, ref)
    with pytest.raises(ConfigError, match="needs 2 per-view augmentations, not 1"):
        view_configs(base, [{"blur_p": 1.0}], 2)
    with pytest.raises(ConfigError, match="solarize_p"):
        view_configs(base, [{"solarize_p": 2.0}, {}], 2)


# ---- SimCLR's Figure 5 operations: Sobel, Gaussian noise, rotation, one augmented branch ----


def sobel_reference(img: np.ndarray) -> np.ndarray:
    """Sobel edge magnitude of one (3, H, W) image, written out with loops."""
    luma = 0.2989 * img[0] + 0.587 * img[1] + 0.114 * img[2]
    h, w = luma.shape
    padded = np.pad(luma, 1, mode="edge")
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
    out = np.empty((h, w))
    for i in range(h):
        for j in range(w):
            patch = padded[i : i + 3, j : j + 3]
            gx, gy = (patch * kx).sum(), (patch * kx.T).sum()
            out[i, j] = min(np.hypot(gx, gy) / 4, 1.0)
    return np.broadcast_to(out, img.shape)


def test_sobel_matches_the_reference_and_leaves_the_others() -> None:
    from selfsup.augment import sobel

    x = torch.rand(4, 3, 9, 7, dtype=torch.float64)
    applied = torch.tensor([True, False, True, False])
    out = sobel(x, applied)
    for i in range(4):
        expected = sobel_reference(x[i].numpy()) if applied[i] else x[i].numpy()
        np.testing.assert_allclose(out[i].numpy(), expected, atol=1e-6)
    # A vertical step edge of height 1: the largest response, 1 after scaling.
    step = torch.zeros(1, 3, 6, 6)
    step[..., 3:] = 1
    assert float(sobel(step, torch.tensor([True])).max()) == pytest.approx(1.0, abs=2e-4)  # luma weights sum to 0.9999


def test_rotation_matches_torchvision_and_its_rates() -> None:
    from selfsup.augment import rotate_quarters

    x = torch.rand(6, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    turns = torch.tensor([0, 1, 2, 3, 1, 0])
    out = rotate_quarters(x, turns)
    for i in range(len(x)):
        torch.testing.assert_close(out[i], TF.rotate(x[i], 90.0 * int(turns[i])), atol=0, rtol=0)
    p = sample_params(replace(resolved(), rotate_p=0.6), N, 32, 32, torch.Generator().manual_seed(2))
    assert p.rotate is not None
    turned = p.rotate > 0
    assert abs(float(turned.float().mean()) - 0.6) < 4 * (0.24 / N) ** 0.5
    counts = torch.bincount(p.rotate[turned], minlength=4)[1:].double() / turned.sum()
    assert (counts - 1 / 3).abs().max() < 0.04  # 90, 180 and 270 degrees alike
    with pytest.raises(ConfigError, match="square"):
        sample_params(replace(resolved(), rotate_p=0.5), 4, 24, 32, torch.Generator())


def test_gaussian_noise_rate_and_std() -> None:
    cfg = replace(resolved(), noise_p=0.5, noise_std=0.2)
    p = sample_params(cfg, 2000, 8, 8, torch.Generator().manual_seed(3))
    assert p.noise is not None and p.noise.shape == (2000, 3, 8, 8)
    per_image = p.noise.flatten(1).std(1)
    noisy = per_image > 0
    assert abs(float(noisy.float().mean()) - 0.5) < 4 * (0.25 / 2000) ** 0.5
    # Each noisy image's std is uniform in [0, 0.2]: mean 0.1, within the range.
    assert abs(float(per_image[noisy].mean()) - 0.1) < 0.01 and float(per_image.max()) < 0.2 * 1.2
    x = torch.full((2, 3, 4, 4), 0.5)
    noise = torch.full((2, 3, 4, 4), 0.7)
    from selfsup.augment import add_noise

    assert torch.equal(add_noise(x, noise), torch.ones_like(x))  # clamped to [0, 1]


def test_new_operations_change_nothing_else_when_off() -> None:
    # Augmentations without them draw exactly the random numbers they drew before.
    for change in ({"sobel_p": 0.0}, {"noise_p": 0.0, "noise_std": 0.3}, {"rotate_p": 0.0}):
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        a = sample_params(resolved(), 8, 32, 32, g1)
        b = sample_params(replace(resolved(), **change), 8, 32, 32, g2)
        assert torch.equal(g1.get_state(), g2.get_state()) and torch.equal(a.theta, b.theta)
        assert b.sobel is None and b.noise is None and b.rotate is None
    # Each one on: the batch pipeline applies it and still selects rows for distributed runs.
    cfg = replace(resolved("none"), sobel_p=1.0, noise_p=1.0, rotate_p=1.0)
    p = sample_params(cfg, 6, 8, 8, torch.Generator().manual_seed(0))
    half = p.select(torch.tensor([0, 2, 4]))
    assert half.noise is not None and half.noise.shape[0] == 3 and torch.equal(half.noise, p.noise[[0, 2, 4]])
    out = apply_params(torch.randint(0, 256, (6, 8, 8, 3), dtype=torch.uint8), p, cfg)
    assert out.shape == (6, 3, 8, 8) and torch.isfinite(out).all()


def test_identity_second_view() -> None:
    from selfsup.augment import ViewAugment, view_configs

    base = resolve_augment(AugmentConfig(preset="simclr", second_view="identity", mean=[0.5] * 3, std=[0.25] * 3), "")
    views = view_configs(base, [], 2)
    assert views[0] == base and views[1].preset == "none" and views[1].mean == base.mean
    u8 = torch.randint(0, 256, (5, 8, 8, 3), dtype=torch.uint8)
    out = ViewAugment(views)(u8, torch.Generator().manual_seed(0))
    expected = (u8.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(out[5:], expected, atol=1e-6, rtol=0)  # the second view: the image itself
    assert not torch.allclose(out[:5], expected)
    with pytest.raises(ConfigError, match="second_view"):
        resolve_augment(AugmentConfig(preset="simclr", second_view="other"), "simclr")  # type: ignore[arg-type]


def test_blur_kernel_follows_the_image_size_as_seed_000_computes_it() -> None:
    from selfsup.augment import blur_kernel_for

    assert [blur_kernel_for(s) for s in (32, 64, 96, 224)] == [3, 7, 9, 23]
    assert resolved("seed000").blur_kernel == 0  # resolved from the images when applied
    cfg = replace(resolved("none"), blur_p=1.0)
    u8 = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    auto = BatchAugment(cfg)(u8, torch.Generator().manual_seed(0))
    three = BatchAugment(replace(cfg, blur_kernel=3))(u8, torch.Generator().manual_seed(0))
    assert torch.equal(auto, three)


def test_compile_is_for_gpus_and_follows_train_compile() -> None:
    # On a CPU a compiling augmenter keeps the per-op path (compiling pays where kernel
    # launches cost, on a GPU); the training loop takes the flag from train.compile.
    from selfsup.config import Config
    from selfsup.methods.base import Method
    from selfsup.train.loop import view_augment

    cfg = resolved()
    u8 = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    plain = BatchAugment(cfg)(u8, torch.Generator().manual_seed(1), 2)
    compiling = BatchAugment(cfg, compile=True)
    assert torch.equal(compiling(u8, torch.Generator().manual_seed(1), 2), plain)
    assert not compiling._compiled  # nothing was compiled on the CPU

    class TwoViews(Method):
        n_views = 2

    base = Config()
    base.augment = resolve_augment(AugmentConfig(preset="simclr", mean=[0.5] * 3, std=[0.25] * 3), "simclr")
    for flag in (False, True):
        base.train.compile = flag
        assert all(a.compile is flag for a in view_augment(base, TwoViews.__new__(TwoViews)).augments)


@pytest.mark.parametrize("preset", ["simclr", "moco_v2", "seed000", "weak"])
def test_fixed_path_traces_to_one_graph(preset: str) -> None:
    # What train.compile fuses on a GPU must trace without graph breaks (a break would
    # split the augmentation back into many launches); the 'eager' backend checks the
    # trace on a CPU in seconds, without generating code.
    import functools

    from selfsup.augment.batch import apply_fixed, device_params

    cfg = resolved(preset)
    u8 = torch.randint(0, 256, (16, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    p = device_params(sample_params(cfg, 16, 32, 32, torch.Generator().manual_seed(1)), torch.device("cpu"))
    fn = functools.partial(apply_fixed, cfg=cfg, size=24)
    torch._dynamo.reset()
    traced = torch.compile(fn, backend="eager", fullgraph=True, dynamic=False)
    torch.testing.assert_close(traced(u8, p), fn(u8, p))
