"""Augmentation previews: the views are what the batch augmentation draws, drawn into a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.augment import BatchAugment, resolve_augment
from selfsup.cli import main
from selfsup.config import AugmentConfig
from selfsup.preview import augmented_views


def test_views_are_the_training_augmentation_without_normalisation() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    cfg = resolve_augment(AugmentConfig(), "seed000")
    views = augmented_views(images, cfg, views=2, seed=5)
    assert views.shape == (3, 2, 32, 32, 3) and views.min() >= 0 and views.max() <= 1
    plain = BatchAugment(resolve_augment(AugmentConfig(preset="seed000", mean=[0.0] * 3, std=[1.0] * 3), "seed000"))(
        torch.from_numpy(images), torch.Generator().manual_seed(5), n_views=2
    )
    # Row i, view j is the j-th view block of the training batch.
    np.testing.assert_allclose(views[1, 1], plain[3 + 1].clamp(0, 1).permute(1, 2, 0).numpy(), atol=1e-6)
    # The 'none' preset leaves images as they are.
    same = augmented_views(images, resolve_augment(AugmentConfig(), "none"), views=1)
    np.testing.assert_allclose(same[:, 0], images / 255, atol=1e-6)


def test_cli_draws_a_grid(shared_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "views.png"
    assert (
        main(
            [
                "augment",
                "--preset",
                "moco_v2",
                "--n",
                "3",
                "--views",
                "5",
                "--out",
                str(out),
                "--data",
                str(shared_folder),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == str(out)
    with Image.open(out) as img:
        w, h = img.size
    assert w > h > 100  # 3 rows of 6 panels
    with pytest.raises(SystemExit) as e:  # the flag's choices: refused while parsing, in one line
        main(["augment", "--preset", "nope", "--out", str(out), "--data", str(shared_folder)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice: 'nope'" in err[0] and "'simclr'" in err[0]
