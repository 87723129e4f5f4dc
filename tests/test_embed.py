"""selfsup embed: a folder, tar or dataset to float32 embeddings with an index; nearest-image queries."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_overrides
from selfsup import embed, embed_query, pretrain
from selfsup.cli import main
from selfsup.config import load_config
from selfsup.data import load_dataset
from selfsup.embed import EmbedOptions
from selfsup.errors import ConfigError, RunDirError
from selfsup.eval import extract_features, feature_options, load_run_model


@pytest.fixture(scope="module")
def encoder_run(shared_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("embed") / "run"
    pretrain(load_config(None, tiny_overrides(shared_folder, **{"train.epochs": 1})), out=out, log=lambda s: None)
    return out


def odd_folder(root: Path) -> list[str]:
    """One-channel PNGs of odd sizes in class folders, plus files that are not images."""
    rng = np.random.default_rng(3)
    paths = []
    for cls in ("a", "b"):
        for i, (w, h) in enumerate([(45, 37), (33, 61), (17, 19)]):
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8), "L").save(root / cls / f"{i}.png")
            paths.append(f"{cls}/{i}.png")
    (root / "a" / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0")
    return sorted(paths)


@pytest.mark.slow
def test_bundled_test_split_equals_the_features_evaluation_uses(encoder_run: Path, tmp_path: Path) -> None:
    out = embed(
        encoder_run, "cifar10", tmp_path / "emb", options=EmbedOptions(split="test", device="cpu", progress=False)
    )
    got = np.load(out / "embeddings.npy")
    cfg, model, _ = load_run_model(encoder_run)
    test = load_dataset("cifar10", progress=False).test
    want = extract_features(model.backbone, test.images, **feature_options(cfg, torch.device("cpu")))
    assert got.dtype == np.float32 and got.shape == tuple(want.shape) == (10000, 64)
    np.testing.assert_array_equal(got, want.numpy())
    rows = list(csv.DictReader(open(out / "index.csv")))
    assert [r["label"] for r in rows] == [test.classes[int(y)] for y in test.labels]
    assert rows[0]["path"] == "test/00000" and {r["split"] for r in rows} == {"test"}


def test_odd_one_channel_pngs_one_row_each_in_index_order(encoder_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    paths = odd_folder(folder)
    out = embed(encoder_run, folder, tmp_path / "emb", options=EmbedOptions(device="cpu", progress=False))
    vectors = np.load(out / "embeddings.npy")
    rows = list(csv.DictReader(open(out / "index.csv")))
    assert [r["path"] for r in rows] == paths and vectors.shape == (len(paths), 64)
    assert [r["label"] for r in rows] == [p.split("/")[0] for p in paths]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["count"] == len(paths) and meta["feature_dim"] == 64
    # Each row is that image's features, whatever else was in its batch.
    cfg, model, _ = load_run_model(encoder_run)
    from selfsup.data.readers import decode_image

    for i in (0, 4):
        pixels = np.array(decode_image((folder / paths[i]).read_bytes(), 32, paths[i]))[None]
        alone = extract_features(model.backbone, pixels, **feature_options(cfg, torch.device("cpu")))
        np.testing.assert_allclose(vectors[i], alone[0].numpy(), rtol=2e-2, atol=2e-2)
    hits = embed_query(out, folder / paths[4], k=3, device="cpu")
    assert hits[0]["path"] == paths[4] and hits[0]["similarity"] == pytest.approx(1.0, abs=1e-3)
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["similarity"] >= hits[1]["similarity"]


def test_never_reads_its_output_and_never_overwrites_unasked(encoder_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    paths = odd_folder(folder)
    out = folder / "embeddings"  # inside the data folder
    embed(encoder_run, folder, out, options=EmbedOptions(device="cpu", progress=False))
    Image.new("RGB", (32, 32)).save(out / "stray.png")  # an image inside the output folder
    with pytest.raises(RunDirError, match="already exists; pass --overwrite"):
        embed(encoder_run, folder, out, options=EmbedOptions(device="cpu", progress=False))
    embed(encoder_run, folder, out, overwrite=True, options=EmbedOptions(device="cpu", progress=False))
    assert [r["path"] for r in csv.DictReader(open(out / "index.csv"))] == paths
    with pytest.raises(RunDirError, match="holds the images to embed"):
        embed(encoder_run, folder, folder, overwrite=True, options=EmbedOptions(device="cpu", progress=False))
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(RunDirError, match="not an embedding folder"):
        embed(encoder_run, folder, other, overwrite=True, options=EmbedOptions(device="cpu", progress=False))
    assert (other / "keep.txt").is_file()
    with pytest.raises(ConfigError, match="neither a run directory nor an exported encoder"):
        embed(tmp_path, folder, tmp_path / "x", options=EmbedOptions(device="cpu", progress=False))


def test_cli_embeds_an_export_and_a_tar_and_queries(
    encoder_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import tarfile

    folder = tmp_path / "photos"
    paths = odd_folder(folder)
    with tarfile.open(tmp_path / "photos.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="photos")
    assert main(["export", str(encoder_run), "--out", str(tmp_path / "export")]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "embed",
                str(tmp_path / "export"),
                "--data",
                str(tmp_path / "photos.tar.gz"),
                "--out",
                str(tmp_path / "emb"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert f"{len(paths)} images" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "emb" / "index.csv")))
    assert [r["path"] for r in rows] == [f"photos/{p}" for p in paths]
    assert main(["embed", "--out", str(tmp_path / "emb"), "--query", str(folder / paths[1]), "-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].split()[2] == f"photos/{paths[1]}"
    assert main(["embed", str(encoder_run), "--out", str(tmp_path / "e2")]) == 2
    assert "needs RUN_DIR" in capsys.readouterr().err


def test_unreadable_images_stop_the_run_or_are_left_out_of_every_row(encoder_run: Path, tmp_path: Path) -> None:
    from selfsup.errors import DataError

    folder = tmp_path / "photos"
    paths = odd_folder(folder)
    (folder / "a" / "9.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="a/9.png: cannot decode image"):
        embed(encoder_run, folder, tmp_path / "emb", options=EmbedOptions(device="cpu", progress=False))
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        out = embed(
            encoder_run,
            folder,
            tmp_path / "emb2",
            options=EmbedOptions(device="cpu", progress=False, skip_invalid=True),
        )
    rows = list(csv.DictReader(open(out / "index.csv")))
    assert [r["path"] for r in rows] == paths and np.load(out / "embeddings.npy").shape[0] == len(paths)
