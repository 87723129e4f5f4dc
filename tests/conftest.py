"""Shared fixtures: tiny datasets written by the tests, an isolated cache, tiny configs."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

CLASSES = ["cat", "dog", "frog"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = tmp_path_factory.mktemp("selfsup-cache")
    os.environ["SELFSUP_CACHE_DIR"] = str(cache)
    os.environ.setdefault("SELFSUP_DATA_DIR", str(REPO / "data"))


def class_image(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A learnable image: a class-coloured square on noise, at a random place."""
    img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
    colour = np.zeros(3, dtype=np.uint8)
    colour[label % 3] = 230
    s = size // 2
    y, x = rng.integers(0, size - s, 2)
    img[y : y + s, x : x + s] = colour
    return img


def write_image_folder(root: Path, per_class: dict[str, int], seed: int = 0, ext: str = ".png") -> Path:
    """``root/<split>/<class>/<i><ext>`` with learnable images; returns root."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for label, cls in enumerate(CLASSES):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(class_image(label, rng)).save(d / f"{i:04d}{ext}")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A train/test ImageFolder: 3 classes, 32 train and 8 test images each."""
    return write_image_folder(tmp_path / "imgs", {"train": 32, "test": 8})


@pytest.fixture(scope="session")
def shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention ImageFolder shared by training tests (decoded once)."""
    return write_image_folder(tmp_path_factory.mktemp("data") / "imgs", {"train": 32, "test": 8})


def make_tar(src: Path, dest: Path, arcname: str = ".") -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src, arcname=arcname)
    return dest


def write_cifar_pickle(
    folder: Path, n_per_batch: int = 20, seed: int = 0, labels_override: list[int] | None = None
) -> Path:
    """A small ``cifar-10-batches-py`` in the official format (dicts with bytes keys)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": n_per_batch}, f)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = labels_override if labels_override is not None else [int(v) for v in rng.integers(0, 10, n_per_batch)]
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"{i}.png".encode() for i in range(len(labels))],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return folder


def tiny_overrides(data: Path | str, **extra: Any) -> dict[str, Any]:
    """Overrides for a run that takes a second or two on the CPU."""
    base: dict[str, Any] = {
        "data.name": str(data),
        "model.backbone": "preact_resnet8",
        "model.head_dims": [32, 16],
        "train.epochs": 2,
        "train.batch_size": 16,
        "train.progress": False,
        "train.eval_after": False,
        "train.num_threads": 1,
        "train.log_every": 2,
        "optim.warmup_epochs": 0.5,
        "eval.linear_epochs": 3,
        "eval.batch_size": 64,
        "eval.monitor_train": 48,
        "eval.monitor_test": 24,
    }
    base.update(extra)
    return base


def cli_flags(data: Path | str, **extra: Any) -> list[str]:
    """:func:`tiny_overrides` as command-line flags."""
    flags: list[str] = []
    for k, v in tiny_overrides(data, **extra).items():
        flags += [f"--{k}", ",".join(map(str, v)) if isinstance(v, list) else str(v)]
    return flags


def cli_command(out: Path, data: Path, *extra: str) -> list[str]:
    """A `python -m selfsup pretrain` command for a tiny 3-epoch (18-step) run, logging every step."""
    flags = cli_flags(data, **{"train.epochs": 3, "train.log_every": 1})
    return [sys.executable, "-m", "selfsup", "pretrain", "--out", str(out), *flags, *extra]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for subprocesses: this checkout's sources first on the path."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    return env


def wait_for_step(out: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Block until the run in ``out`` has logged ``step`` (or fail if it ended first)."""
    from selfsup.rundir import read_jsonl

    t0 = time.time()
    while time.time() - t0 < timeout:
        if any(r.get("step", 0) >= step for r in read_jsonl(out / "metrics.jsonl")):
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.01)
    raise AssertionError("timed out")


def final_state(out: Path) -> dict:
    """The newest checkpoint of a run."""
    from selfsup.checkpoint import load_latest

    loaded = load_latest(out)
    assert loaded is not None
    return loaded[0]


def assert_same_state(a: dict, b: dict) -> None:
    """Bit-identical model weights, buffers and optimizer state."""
    import torch

    assert a["step"] == b["step"]
    for name, t in a["model"].items():
        assert torch.equal(t, b["model"][name]), name
    oa, ob = a["optimizer"]["state"], b["optimizer"]["state"]
    assert oa.keys() == ob.keys()
    for k in oa:
        for name, t in oa[k].items():
            assert torch.equal(t, ob[k][name]), (k, name)


@pytest.fixture(scope="session")
def reference_run(shared_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny 18-step run of :func:`cli_command`, never interrupted."""
    out = tmp_path_factory.mktemp("ref") / "run"
    subprocess.run(cli_command(out, shared_folder), check=True, env=subprocess_env(), capture_output=True)
    return out


def epoch_records(run: Path) -> list[dict]:
    """The per-epoch records (with a validation loss) of one fine-tuning's run directory."""
    from selfsup.rundir import read_jsonl

    return [r for r in read_jsonl(run / "metrics.jsonl") if "val_loss" in r]
