"""Embeddings of a folder of images with a trained encoder, and nearest-image queries.

>>> import selfsup
>>> out = selfsup.embed("runs/quick", data="photos/", out="photos-emb")
>>> selfsup.embed_query("photos-emb", "photos/cat/001.jpg", k=8)[0]["path"]
'cat/001.jpg'

An output folder holds::

    embeddings.npy   float32 (N, D): row i is the encoder's features of image i
    index.csv        row, path, label, split (label and split where the source gives them)
    meta.json        the encoder (run directory or export), data, sizes, normalisation

The encoder is a run directory (its newest checkpoint) or an export folder
(``backbone.json`` with ``backbone.safetensors``, from ``selfsup export``). Images are
encoded as evaluation encodes them: resized and centre-cropped to the encoder's image
size, normalised with its training statistics, in eval mode, bf16 where the device
computes it natively. Files under the output folder are never read as input.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch import nn

from .data import load_dataset
from .data.readers import (
    IMAGE_EXTENSIONS,
    MAX_FILE_MB,
    FileRef,
    decode_files,
    decode_image,
    is_hidden,
    layout,
    list_directory,
    read_tar_members,
)
from .errors import ConfigError, DataError, RunDirError
from .eval.features import extract_features
from .fileio import write_atomic
from .runtime import resolve_device, use_bf16

EMBEDDINGS, INDEX, META = "embeddings.npy", "index.csv", "meta.json"
NAMED = ("cifar10", "cifar10-pickle")
_CHUNK = 2048  # images decoded and encoded at a time: bounds memory on large folders


@dataclass
class Encoder:
    """A frozen encoder with what it needs to encode raw images like evaluation does."""

    module: nn.Module
    mean: list[float]
    std: list[float]
    image_size: int
    source: str
    batch_size: int = 256


def load_encoder(source: str | Path, device: torch.device) -> Encoder:
    """A run directory's encoder, or an exported one (``backbone.json`` + ``backbone.safetensors``).

    Raises:
        ConfigError: If ``source`` is neither.
    """
    from .rundir import is_run_dir

    path = Path(source)
    if is_run_dir(path):
        from .eval import load_run_model

        cfg, model, _ = load_run_model(path, device)
        mean, std = cfg.augment.mean, cfg.augment.std
        assert mean is not None and std is not None
        backbone = model.backbone
        assert isinstance(backbone, nn.Module)
        return Encoder(backbone, mean, std, cfg.data.image_size, str(path), cfg.eval.batch_size)
    folder = path if path.is_dir() else path.parent
    meta_path = folder / "backbone.json"
    if not meta_path.is_file() or not (folder / "backbone.safetensors").is_file():
        raise ConfigError(
            f"{path} is neither a run directory nor an exported encoder "
            "(a folder with backbone.json and backbone.safetensors, from 'selfsup export')"
        )
    from safetensors.torch import load_file

    from .models import build_backbone

    meta = json.loads(meta_path.read_text())
    module = build_backbone(meta["backbone"], meta.get("width", 1), meta.get("stem", "cifar"))
    module.load_state_dict(load_file(folder / "backbone.safetensors"))
    return Encoder(module.to(device).eval(), meta["mean"], meta["std"], int(meta["image_size"]), str(folder))


@dataclass
class _Item:
    path: str
    label: str
    split: str
    source: FileRef | int  # a file to decode, or a row of a named dataset's decoded array


def _labels(files: list[str], dirs: list[str], where: str) -> dict[str, tuple[str, str]]:
    """Path -> (split, class) where the folder's layout gives them, else nothing."""
    try:
        found = layout(files, dirs, where)
    except DataError:
        return {}  # loose files, empty class folders, ...: embed them without labels
    return {p: (split, cls) for split, classes in found.items() for cls, paths in classes.items() for p in paths}


def _is_image(rel: str) -> bool:
    path = PurePosixPath(rel)
    return not is_hidden(path.parts) and path.suffix.lower() in IMAGE_EXTENSIONS


def _list_source(
    data: str, out: Path, split: str | None, skip_invalid: bool = False
) -> tuple[list[_Item], np.ndarray | None]:
    """The images of ``data`` in index order (and, for named datasets, their decoded array).

    Folders and tars are listed under the same rules as training data: links that leave
    the folder, special files, unsafe archive member names and oversized files are
    refused (skipped, with a warning, under ``skip_invalid``).
    """
    if data in NAMED:
        splits = load_dataset(data, progress=True)
        chosen = [s for s in ("train", "test") if split in (None, s)]
        arrays: list[np.ndarray] = []
        items: list[_Item] = []
        for name in chosen:
            ds = getattr(splits, name)
            for i, label in enumerate(ds.labels):
                items.append(_Item(f"{name}/{i:05d}", ds.classes[int(label)], name, len(items)))
            arrays.append(ds.images)
        return items, np.concatenate(arrays)
    root = Path(data).expanduser()
    if not root.exists():
        raise DataError(f"data path does not exist: {root} (--data: a folder, a tar, or {', '.join(NAMED)})")
    store: Path | dict[str, bytes]
    if root.is_file():
        store, dirs = read_tar_members(root, skip_invalid)
        files = sorted(f for f in store if _is_image(f))
    else:
        out_resolved = out.resolve()
        all_files, dirs = list_directory(root, skip_invalid)
        # Never read our own output, wherever it lies under the data folder.
        files = [f for f in all_files if _is_image(f) and out_resolved not in (root / f).resolve().parents]
        store = root
    labels = _labels(files, dirs, str(root))
    items = [_Item(f, labels.get(f, ("", ""))[1], labels.get(f, ("", ""))[0], FileRef(f, f, store, 0)) for f in files]
    if split is not None:
        items = [it for it in items if it.split == split]
    if not items:
        raise DataError(f"no images found in {root}" + (f" (split {split})" if split else ""))
    return items, None


def _chunks(
    items: list[_Item], array: np.ndarray | None, size: int, skip_invalid: bool
) -> Iterator[tuple[np.ndarray, list[_Item]]]:
    """Decoded uint8 (n, size, size, 3) images ``_CHUNK`` at a time, with the items they are.

    Files go through the dataset decoder (:func:`~selfsup.data.readers.decode_files`,
    threads, one-line errors); with ``skip_invalid`` the ones that do not decode are left
    out, once, and so are their rows of the index.
    """
    for start in range(0, len(items), _CHUNK):
        part = items[start : start + _CHUNK]
        sources = [it.source for it in part]
        if array is not None:
            yield array[[s for s in sources if isinstance(s, int)]], part
            continue
        # Each file's label slot carries its position in the chunk: the kept ones come back.
        refs = [replace(s, label=i) for i, s in enumerate(sources) if isinstance(s, FileRef)]
        images, kept = decode_files(refs, size, skip_invalid, progress=False, desc="embedding")
        yield images, [part[int(i)] for i in kept]


def _check_out(out: Path, data: str) -> None:
    """Refuse an output folder that is, or holds, the images to embed."""
    if data not in NAMED:
        src = Path(data).expanduser().resolve()
        if out.resolve() == src or out.resolve() in src.parents:
            raise RunDirError(f"output folder {out} holds the images to embed; choose another --out")


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Create ``out``; refuse one that holds anything but an earlier embedding (or anything, unless asked)."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"output {out} exists and is a file")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise RunDirError(f"output folder {out} already exists; pass --overwrite to replace its embeddings")
        if not (out / META).is_file():
            raise RunDirError(f"{out} is not an embedding folder (no {META}); refusing to overwrite it")
        for name in (EMBEDDINGS, INDEX, META):
            (out / name).unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create output folder {out} ({e.strerror or e})") from None


@dataclass
class EmbedOptions:
    """How :func:`embed` reads and encodes.

    Attributes:
        split: Only 'train' or 'test' images (named datasets, or folders with splits).
        device: 'auto', 'cpu', 'cuda' or 'cuda:N'.
        batch_size: Images per forward pass (default: the run's eval batch size, or 256).
        skip_invalid: Leave out images that cannot be decoded instead of stopping.
        progress: Show a progress bar.
    """

    split: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    skip_invalid: bool = False
    progress: bool = True


def embed(
    source: str | Path,
    data: str | Path,
    out: str | Path,
    overwrite: bool = False,
    options: EmbedOptions | None = None,
) -> Path:
    """Encode every image of ``data`` and write ``out`` (see the module docstring).

    Args:
        source: A run directory or an export folder.
        data: A folder (any layout; class folders give labels), a tar of one, or a
            named dataset ('cifar10', 'cifar10-pickle': both splits unless ``options.split``).
        out: The output folder; must not exist (or be empty) unless ``overwrite``.
        overwrite: Replace the embeddings in an existing output folder.
        options: Split, device, batch size, what to do with undecodable images (:class:`EmbedOptions`).

    Returns:
        The output folder.

    Raises:
        SelfsupError: For a bad source, data or output folder (one-line messages).
    """
    o = options or EmbedOptions()
    if o.split not in (None, "train", "test"):
        raise ConfigError(f"split must be train or test, got {o.split!r}")
    out, data = Path(out), str(data)
    dev = resolve_device(o.device)
    _check_out(out, data)
    encoder = load_encoder(source, dev)
    items, array = _list_source(data, out, o.split, o.skip_invalid)
    _prepare_out(out, overwrite)
    feats: dict[str, Any] = dict(mean=encoder.mean, std=encoder.std, device=dev,
                                 batch_size=o.batch_size or encoder.batch_size, bf16=use_bf16("auto", dev),
                                 channels_last=True)  # fmt: skip
    t0 = time.perf_counter()
    vectors, items = _encode(encoder, (items, array), feats, o)
    if not len(items):
        raise DataError(f"no image of {data} could be decoded")
    _write_embeddings(out, vectors, items)
    meta = {
        "selfsup_embed": 1,
        "encoder": str(Path(source).resolve()),
        "data": data if data in NAMED else str(Path(data).expanduser().resolve()),
        "split": o.split,
        "count": len(items),
        "feature_dim": int(vectors.shape[1]),
        "image_size": encoder.image_size,
        "mean": encoder.mean,
        "std": encoder.std,
        "bf16": feats["bf16"],
        "seconds": round(time.perf_counter() - t0, 2),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_atomic(out / META, (json.dumps(meta, indent=2) + "\n").encode())
    return out


def _encode(
    encoder: Any, source: tuple[list[Any], Any], feats: dict[str, Any], o: EmbedOptions
) -> tuple[np.ndarray, list[Any]]:
    """The vectors of every decodable image of ``source`` (items and their array), and those items."""
    from tqdm import tqdm

    items, array = source
    parts, rows = [], []
    with tqdm(total=len(items), desc="embedding", unit="img", disable=not o.progress, leave=False) as bar:
        for images, kept in _chunks(items, array, encoder.image_size, o.skip_invalid):
            if len(kept):
                parts.append(extract_features(encoder.module, images, **feats).cpu().numpy().astype(np.float32))
                rows += kept
            bar.update(len(images))
    return (np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)), rows


def _write_embeddings(out: Path, vectors: np.ndarray, items: list[Any]) -> None:
    """``embeddings.npy`` and ``index.csv`` (row, path, label, split), each written atomically."""
    buffer = io.BytesIO()
    np.save(buffer, vectors)
    write_atomic(out / EMBEDDINGS, buffer.getvalue())
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["row", "path", "label", "split"])
    writer.writerows([i, it.path, it.label, it.split] for i, it in enumerate(items))
    write_atomic(out / INDEX, text.getvalue().encode())


def read_index(folder: str | Path) -> list[dict[str, str]]:
    """The rows of an embedding folder's ``index.csv``."""
    with open(Path(folder) / INDEX, newline="") as f:
        return list(csv.DictReader(f))


def embed_query(
    folder: str | Path, image: str | Path, k: int = 8, source: str | Path | None = None, device: str = "auto"
) -> list[dict[str, Any]]:
    """The ``k`` images of an embedding folder nearest to ``image`` (cosine similarity).

    Args:
        folder: An output folder of :func:`embed`.
        image: An image file.
        k: How many neighbours.
        source: The encoder (default: the one that made ``folder``).
        device: Where to encode the query.

    Returns:
        ``[{"rank", "path", "label", "similarity"}, ...]``, most similar first.
    """
    folder = Path(folder)
    if not (folder / META).is_file():
        raise RunDirError(f"{folder} is not an embedding folder (no {META}); make one with 'selfsup embed'")
    if k < 1:
        raise ConfigError(f"-k must be at least 1, got {k}")
    meta = json.loads((folder / META).read_text())
    dev = resolve_device(device)
    encoder = load_encoder(source or meta["encoder"], dev)
    path = Path(image)
    if not path.is_file():
        what = "not a regular file" if path.exists() else "not found"
        raise DataError(f"query image {what}: {path}")
    if path.stat().st_size > MAX_FILE_MB * 2**20:
        raise DataError(f"query image {path} is {path.stat().st_size / 2**20:.1f} MB, over the {MAX_FILE_MB:g} MB "
                        "limit of one image")  # fmt: skip
    pixels = np.array(decode_image(path.read_bytes(), encoder.image_size, str(path)))[None]
    query = (
        extract_features(encoder.module, pixels, encoder.mean, encoder.std, dev, bf16=use_bf16("auto", dev))
        .cpu()
        .float()
    )
    bank = torch.from_numpy(np.load(folder / EMBEDDINGS))
    sims = torch.nn.functional.normalize(bank, dim=1) @ torch.nn.functional.normalize(query, dim=1)[0]
    top = torch.topk(sims, min(k, len(sims)))
    rows = read_index(folder)
    return [
        {"rank": r + 1, "path": rows[i]["path"], "label": rows[i]["label"], "similarity": float(s)}
        for r, (s, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()))
    ]
