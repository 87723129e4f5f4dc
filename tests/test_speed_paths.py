"""The code paths written for GPU speed, exercised on the CPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from selfsup import pretrain
from selfsup.config import load_config
from selfsup.errors import ConfigError
from selfsup.rundir import read_jsonl


@pytest.mark.parametrize(
    "extra",
    [
        {"train.precision": "fp32"},
        {"train.precision": "bf16"},
        {"train.channels_last": False},
        {"train.compile": True, "train.compile_mode": "reduce-overhead"},
    ],
    ids=["fp32", "bf16", "nchw", "compile-reduce-overhead"],
)
def test_execution_modes_train(extra: dict, shared_folder: Path, tmp_path: Path) -> None:
    cfg = load_config(None, tiny_overrides(shared_folder, **extra))
    result = pretrain(cfg, out=tmp_path / "r", log=lambda s: None)
    assert math.isfinite(result.summary["final_loss"])
    assert result.summary["bf16"] == (
        extra.get("train.precision") == "bf16"
        or ("train.precision" not in extra and __import__("selfsup.runtime").runtime.native_bf16(torch.device("cpu")))
    )


def test_no_device_reads_between_log_intervals(
    shared_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop reads device values (a sync on GPUs) only when it logs, not every step."""
    reads = {"n": 0}
    real_float, real_item, real_tolist = torch.Tensor.__float__, torch.Tensor.item, torch.Tensor.tolist

    def counting_float(self: torch.Tensor) -> float:
        reads["n"] += 1
        return real_float(self)

    def counting_item(self: torch.Tensor):  # type: ignore[no-untyped-def]
        reads["n"] += 1
        return real_item(self)

    monkeypatch.setattr(torch.Tensor, "__float__", counting_float)

    def counting_tolist(self: torch.Tensor):  # type: ignore[no-untyped-def]
        reads["n"] += 1
        return real_tolist(self)

    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
    cfg = load_config(None, tiny_overrides(shared_folder, **{"train.epochs": 3, "train.log_every": 100}))
    pretrain(cfg, out=tmp_path / "r", log=lambda s: None)
    steps = [r for r in read_jsonl(tmp_path / "r" / "metrics.jsonl") if "loss" in r]
    assert len(steps) == 3  # logged at epoch ends only
    # Two reads per log point (every interval scalar at once, then the epoch's), none per step: 18 steps ran.
    assert reads["n"] <= 2 * 3, reads


def test_config_rejects_unknown_compile_mode() -> None:
    with pytest.raises(ConfigError, match="compile_mode"):
        load_config(None, {"train.compile_mode": "turbo"})


def test_to_device_copies_values_and_dtype() -> None:
    from selfsup.runtime import to_device

    t = torch.arange(6, dtype=torch.int64).view(2, 3)
    out = to_device(t, torch.device("cpu"), torch.float32)
    assert out.dtype == torch.float32 and torch.equal(out, t.float())
    assert to_device(t, torch.device("cpu")) is t  # already there: nothing copied
