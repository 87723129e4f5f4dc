"""Fine-tuning on the training engine: resume after kill -9, time budgets, fine-tunings side by side."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import assert_same_state, epoch_records, final_state, subprocess_env, wait_for_step
from selfsup.eval.finetune import finetune
from selfsup.train.plan import PLAN

# 30 labels in batches of 4: 8 steps an epoch (the last one short), 32 in all.
SMALL = ["--labels", "30", "--finetune.val_size", "6", "--finetune.batch_size", "4", "--epochs", "4"]


def finetune_command(encoder: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "selfsup", "finetune", str(encoder), "--out", str(out), *SMALL, *extra]


def run_ok(cmd: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_finetune_killed_and_resumed_matches_uninterrupted(reference_run: Path, tmp_path: Path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_ok(finetune_command(reference_run, whole))
    proc = subprocess.Popen(
        finetune_command(reference_run, killed), env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wait_for_step(killed / "finetune" / "labels-30", 13, proc)  # inside the second epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists()
    refused = subprocess.run(finetune_command(reference_run, killed), env=subprocess_env(), capture_output=True)
    assert refused.returncode == 2 and b"--resume" in refused.stderr  # nothing overwritten by surprise
    resumed = run_ok(finetune_command(reference_run, killed, "--resume"))
    assert "resuming" in resumed.stdout
    a, b = final_state(whole / "finetune" / "labels-30"), final_state(killed / "finetune" / "labels-30")
    assert a["step"] == 32
    assert_same_state(a, b)
    assert a["monitor"]["epoch"] == b["monitor"]["epoch"]
    for name, t in a["monitor"]["state"].items():  # the best epoch's weights, kept across the kill
        assert torch.equal(t, b["monitor"]["state"][name]), name
    ra, rb = (json.loads((d / "metrics.json").read_text())["finetune"]["30"] for d in (whole, killed))
    assert ra["test_top1"] == rb["test_top1"] and ra["val_loss"] == rb["val_loss"]
    assert [r["epoch"] for r in epoch_records(killed / "finetune" / "labels-30")] == [1, 2, 3, 4]


@pytest.mark.slow
def test_two_finetunings_of_one_encoder_run_at_once(reference_run: Path, tmp_path: Path) -> None:
    """The encoder is only read: a short fine-tuning of it runs start to end while a long one trains."""
    long = subprocess.Popen(
        finetune_command(reference_run, tmp_path / "long", "--epochs", "1000"),
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_step(tmp_path / "long" / "finetune" / "labels-30", 1, long)
        short = run_ok(finetune_command(reference_run, tmp_path / "short"))
        assert long.poll() is None, "the long fine-tuning ended before the short one: no overlap"
        assert "fine-tuned (pretrained encoder, 30 labels)" in short.stdout
        long.send_signal(signal.SIGTERM)  # stops at its next step, with a checkpoint
        _, err = long.communicate(timeout=120)
    finally:
        long.kill()
    assert "interrupted at step" in err and "--resume" in err
    assert final_state(tmp_path / "long" / "finetune" / "labels-30")["step"] > 1
    assert "30" in json.loads((tmp_path / "short" / "metrics.json").read_text())["finetune"]
    assert not (reference_run / "finetune").exists()


def test_finetune_for_a_time_budget(reference_run: Path, tmp_path: Path) -> None:
    overrides = {"finetune.labels": 30, "finetune.val_size": 6, "finetune.batch_size": 4, "finetune.time_budget": 0.02}
    lines: list[str] = []
    r = finetune(reference_run, overrides, log=lines.append, out=tmp_path / "ft")["30"]
    plan = json.loads((tmp_path / "ft" / "finetune" / "labels-30" / PLAN).read_text())
    assert plan["time_budget_min"] == pytest.approx(0.02) and plan["total_steps"] >= 1
    assert r["steps"] == plan.get("replans", [plan])[-1]["total_steps"]
    assert any(line.startswith("time budget 0.02 min:") for line in lines)
