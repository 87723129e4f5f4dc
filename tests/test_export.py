"""Export: every registered backbone trains a step, exports, and loads back; ONNX equals PyTorch."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_overrides
from selfsup import pretrain
from selfsup.cli import main
from selfsup.config import load_config
from selfsup.eval import load_run_model
from selfsup.models import BACKBONES, build_backbone

VARIANTS = [(name, stem) for name, spec in sorted(BACKBONES.items()) for stem in spec.stems]


def _train(folder: Path, out: Path, backbone: str, stem: str = "cifar", **extra: object) -> Path:
    # 3 steps of 8 images: ResNet-50's batch-32 steps took a minute on one Zen 3 core.
    overrides = {
        "train.epochs": 1,
        "model.backbone": backbone,
        "model.stem": stem,
        "data.subset": 24,
        "train.batch_size": 8,
        **extra,
    }
    pretrain(load_config(None, tiny_overrides(folder, **overrides)), out=out, log=lambda s: None)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name,stem", VARIANTS, ids=[f"{n}-{s}" for n, s in VARIANTS])
def test_every_backbone_trains_exports_and_loads_back(
    name: str, stem: str, shared_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file

    out = _train(shared_folder, tmp_path / "run", name, stem)
    assert main(["export", str(out)]) == 0
    files = capsys.readouterr().out.split()
    assert [Path(f).name for f in files] == ["backbone.safetensors", "backbone.pt", "backbone.json"]
    meta = json.loads((out / "export" / "backbone.json").read_text())
    assert meta["backbone"] == name and meta["stem"] == stem and meta["checkpoint_step"] == 3
    assert meta["feature_dim"] == BACKBONES[name].feature_dim(1.0) and len(meta["mean"]) == 3
    _, model, _ = load_run_model(out)
    ours = model.backbone.eval()
    state = torch.load(out / "export" / "backbone.pt", weights_only=True)
    safe = load_file(out / "export" / "backbone.safetensors")
    assert state.keys() == safe.keys() and all(torch.equal(state[k], safe[k]) for k in state)
    if BACKBONES[name].torchvision is not None:
        # The recipe in backbone.json rebuilds the encoder with torchvision alone.
        scope: dict[str, object] = {}
        cwd = os.getcwd()
        os.chdir(out / "export")
        try:
            exec(meta["torchvision"], scope)  # noqa: S102 - our own recipe string
        finally:
            os.chdir(cwd)
        ref = scope["m"]
        assert type(ref).__module__.startswith("torchvision.models")
    else:
        assert "torchvision" not in meta
        ref = build_backbone(name, 1, stem)
        ref.load_state_dict(safe)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ref.eval()(x), ours(x))  # type: ignore[operator]


@pytest.mark.parametrize("name", ["preact_resnet8", "resnet18", "mobilenet_v2"])
def test_onnx_export_matches_pytorch(name: str, shared_folder: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    out = _train(shared_folder, tmp_path / "run", name)
    assert main(["export", str(out), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["backbone.json", "backbone.onnx"]
    session = ort.InferenceSession(str(tmp_path / "onnx" / "backbone.onnx"), providers=["CPUExecutionProvider"])
    _, model, _ = load_run_model(out)
    for batch in (1, 7):  # the batch axis is dynamic
        x = torch.randn(batch, 3, 32, 32)
        (got,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            want = model.backbone(x).numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_export_files_have_the_users_normal_permissions(shared_folder: Path, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = _train(shared_folder, tmp_path / "run", "preact_resnet8", **{"train.eval_after": True})
        assert main(["export", str(out)]) == 0
    finally:
        os.umask(old)
    written = [out / "metrics.json", out / "config.yaml", *(out / "checkpoints").iterdir(), *(out / "export").iterdir()]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in written}
    assert set(modes.values()) == {0o644}, modes
