"""Multi-process training: gathered negatives, DDP gradients, torchrun end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import cli_flags, subprocess_env, tiny_overrides
from dist_worker import build, global_views, local_views
from selfsup import pretrain
from selfsup.augment import BatchAugment, resolve_augment
from selfsup.checkpoint import load_latest
from selfsup.config import AugmentConfig, load_config
from selfsup.errors import ConfigError
from selfsup.losses import nt_xent
from selfsup.methods import Batch
from selfsup.rundir import read_jsonl
from selfsup.train.sampler import local_positions

TESTS = Path(__file__).resolve().parent


def torchrun(*args: str, n: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    env = subprocess_env(OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_nt_xent_over_shards_averages_to_the_global_loss() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    whole = nt_xent(z1, z2, 0.2)
    parts = [nt_xent(z1[i : i + 2], z2[i : i + 2], 0.2, z1, z2, offset=i) for i in range(0, 8, 2)]
    torch.testing.assert_close(torch.stack(parts).mean(), whole)


def test_local_positions_partition_the_batch() -> None:
    shares = [local_positions(12, 4, r, 2) for r in range(2)]
    assert shares[0].tolist() == [0, 1, 4, 5, 6, 7] and shares[1].tolist() == [2, 3, 8, 9, 10, 11]
    assert sorted(torch.cat([local_positions(8, 8, r, 4) for r in range(4)]).tolist()) == list(range(8))


def test_sharded_augmentation_equals_one_process() -> None:
    cfg = resolve_augment(AugmentConfig(), "seed000")
    from dataclasses import replace

    aug = BatchAugment(replace(cfg, mean=[0.5] * 3, std=[0.2] * 3))
    images = torch.randint(0, 256, (6, 32, 32, 3), dtype=torch.uint8)
    whole = aug(images, torch.Generator().manual_seed(3), n_views=2)
    for part in range(2):
        pos = local_positions(6, 6, part, 2)
        mine = aug(images[pos], torch.Generator().manual_seed(3), n_views=2, positions=pos, total=6)
        torch.testing.assert_close(mine, torch.cat([whole[pos], whole[6 + pos]]))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_two_processes_match_one_on_the_global_batch(method: str, tmp_path: Path) -> None:
    out = tmp_path / "dist.pt"
    r = torchrun(str(TESTS / "dist_worker.py"), method, str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    got = torch.load(out, weights_only=True)
    model = build(method)
    views = local_views(global_views(), 0, 1)
    labels = torch.zeros(len(views) // 2, dtype=torch.long)
    loss = model.training_step(Batch(views, labels, torch.Generator().manual_seed(2)))["loss"]
    loss.backward()
    assert abs(float(got["loss"]) - loss.item()) < 1e-5
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == got["grads"].keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(got["grads"][name], grad, atol=1e-5, rtol=0, msg=name)
    if method == "moco":  # every rank's keys entered the queue, in rank order
        torch.testing.assert_close(got["queue"], model.queue, atol=1e-6, rtol=0)


def test_sync_bn_on_cpu_is_a_clear_error(shared_folder: Path, tmp_path: Path) -> None:
    cfg = load_config(None, tiny_overrides(shared_folder, **{"train.sync_bn": True}))
    with pytest.raises(ConfigError, match="sync_bn needs CUDA"):
        pretrain(cfg, out=tmp_path / "r", log=lambda s: None)


def test_a_batch_of_one_per_process_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Barlow Twins, VICReg and BatchNorm need two images per process; four processes of a batch of 4 have one."""
    import selfsup.pretraining as pretraining

    monkeypatch.setattr(pretraining, "world_size", lambda: 4)
    cfg = load_config(None, {"method.name": "barlow-twins", "train.batch_size": 4})
    with pytest.raises(ConfigError, match="fewer than 2 images"):
        pretraining._check_distributed(cfg, torch.device("cpu"))
    pretraining._check_distributed(load_config(None, {"train.batch_size": 8}), torch.device("cpu"))


@pytest.mark.slow
def test_torchrun_pretrain_and_resume(shared_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["-m", "selfsup", "pretrain", "--out", str(out), *cli_flags(shared_folder, **{"train.eval_after": True})]
    r = torchrun(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("run directory:") == 1  # only rank 0 reports
    steps = [x["step"] for x in read_jsonl(out / "metrics.jsonl") if "loss" in x]
    assert steps == [2, 4, 6, 8, 10, 12]  # written once, by rank 0
    summary = read_jsonl(out / "metrics.jsonl")[-1]
    assert summary["processes"] == 2 and summary["step"] == 12
    assert (out / "metrics.json").is_file()
    final = load_latest(out)[0]
    # Lose the last epoch and resume under torchrun: the same weights again.
    (out / "checkpoints" / "step-000000012.pt").unlink()
    r = torchrun("-m", "selfsup", "pretrain", "--out", str(out), "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    again = load_latest(out)[0]
    for key, value in final["model"].items():
        assert torch.equal(value, again["model"][key]), key
    r = torchrun(
        "-m", "selfsup", "pretrain", "--out", str(tmp_path / "odd"), *cli_flags(shared_folder), "--batch-size", "15"
    )
    assert r.returncode != 0 and "must be a multiple of the 2 processes" in r.stderr
