"""The training loop: run directory contents, refusal to clobber, kill-and-resume exactness."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import assert_same_state, cli_command, final_state, subprocess_env, tiny_overrides, wait_for_step
from selfsup import pretrain
from selfsup.checkpoint import load_latest
from selfsup.config import load_config
from selfsup.errors import ConfigError, RunDirError, TrainingDivergedError
from selfsup.rundir import load_run_config, read_jsonl


def test_pretrain_writes_a_complete_run(shared_folder: Path, tmp_path: Path) -> None:
    cfg = load_config(None, tiny_overrides(shared_folder, **{"train.eval_after": True, "train.knn_every": 1}))
    out = tmp_path / "run"
    result = pretrain(cfg, out=out, log=lambda s: None)
    assert result.run_dir == out
    names = {p.name for p in out.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "metrics.json", "checkpoints"} <= names
    saved = load_run_config(out)
    a = saved.augment
    assert a.preset == "simclr" and a.crop == "resized" and a.jitter_strength == 0.5
    assert a.mean is not None and len(a.mean) == 3 and a.std is not None
    records = read_jsonl(out / "metrics.jsonl")
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [2, 4, 6, 8, 10, 12]
    assert all(r["views_per_s"] > 0 and r["lr"] > 0 for r in steps)
    epochs = [r for r in records if "epoch_loss" in r]
    assert [r["epoch"] for r in epochs] == [1, 2] and all(0 <= r["knn_top1"] <= 1 for r in epochs)
    summary = records[-1]
    assert summary["summary"] and summary["step"] == 12 and summary["peak_memory_mb"] > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["knn_top1"] <= 1 and 0 <= metrics["linear_top1"] <= 1
    assert metrics["n_test"] == 24 and metrics["checkpoint_step"] == 12
    assert result.metrics["linear_top1"] == metrics["linear_top1"]
    state, path = load_latest(out)
    assert state["step"] == 12 and path.name == "step-000000012.pt"
    assert len(list((out / "checkpoints").iterdir())) <= cfg.train.keep_checkpoints


def test_never_overwrites_without_asking(shared_folder: Path, tmp_path: Path) -> None:
    cfg = load_config(None, tiny_overrides(shared_folder, **{"train.epochs": 1}))
    out = tmp_path / "run"
    pretrain(cfg, out=out, log=lambda s: None)
    before = (out / "config.yaml").read_text()
    with pytest.raises(RunDirError, match="already exists; pass --resume to continue it or --overwrite"):
        pretrain(cfg, out=out, log=lambda s: None)
    assert (out / "config.yaml").read_text() == before
    with pytest.raises(RunDirError, match="train.seed was 0 and is now 1"):
        pretrain(
            load_config(None, tiny_overrides(shared_folder, **{"train.epochs": 1, "train.seed": 1})),
            out=out,
            resume=True,
            log=lambda s: None,
        )
    pretrain(cfg, out=out, overwrite=True, log=lambda s: None)
    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.tex").write_text("do not delete")
    with pytest.raises(RunDirError, match="not a selfsup run directory .*refusing to delete it"):
        pretrain(cfg, out=other, overwrite=True, log=lambda s: None)
    assert (other / "thesis.tex").exists()


def test_bad_input_leaves_no_run_dir(shared_folder: Path, tmp_path: Path) -> None:
    cfg = load_config(None, tiny_overrides(shared_folder, **{"model.backbone": "nope"}))
    with pytest.raises(ConfigError, match="unknown backbone"):
        pretrain(cfg, out=tmp_path / "r", log=lambda s: None)
    assert not (tmp_path / "r").exists()
    cfg = load_config(None, tiny_overrides(shared_folder, **{"train.batch_size": 500}))
    with pytest.raises(ConfigError, match="larger than the 96 training images"):
        pretrain(cfg, out=tmp_path / "r", log=lambda s: None)


def test_nan_loss_stops_with_a_message(shared_folder: Path, tmp_path: Path) -> None:
    cfg = load_config(
        None,
        tiny_overrides(
            shared_folder,
            **{
                "optim.name": "sgd",
                "optim.lr": 1e12,
                "optim.warmup_epochs": 0,
                "train.epochs": 3,
                "train.log_every": 1,
            },
        ),
    )
    with pytest.raises(TrainingDivergedError, match=r"loss became nan by step \d+ .*learning rate .*too high"):
        pretrain(cfg, out=tmp_path / "r", log=lambda s: None)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after,ckpt_minutes", [(8, "0"), (3, "0"), (10, "1e-9")])
def test_sigkill_then_resume_matches_uninterrupted(
    shared_folder: Path, tmp_path: Path, reference_run: Path, kill_after: int, ckpt_minutes: str
) -> None:
    out = tmp_path / "run"
    cmd = cli_command(out, shared_folder, "--train.checkpoint_minutes", ckpt_minutes)
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_step(out, kill_after, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(r.get("step", 0) for r in read_jsonl(out / "metrics.jsonl"))
    assert killed_at < 18, "the run finished before the kill"
    resumed = subprocess.run(
        [sys.executable, "-m", "selfsup", "pretrain", "--out", str(out), "--resume"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout or kill_after < 6
    assert_same_state(final_state(out), final_state(reference_run))
    # The metrics log reads as if the run had never stopped: no step logged twice.
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 19))


def test_time_budget_plans_once_and_resumes_the_same_schedule(shared_folder: Path, tmp_path: Path) -> None:
    from selfsup.train.plan import PLAN

    cfg = load_config(
        None,
        tiny_overrides(
            shared_folder,
            **{
                "train.time_budget": 0.03,
                "train.replan": False,  # one plan: the schedule is then a function of (seed, step) alone
                "train.keep_checkpoints": 5,
                "train.checkpoint_minutes": 1e-9,
            },
        ),
    )
    out = tmp_path / "run"
    result = pretrain(cfg, out=out, log=lambda s: None)
    plan = json.loads((out / PLAN).read_text())
    total = plan["total_steps"]
    assert total >= 1 and plan["time_budget_min"] == 0.03 and plan["seconds_per_step"] > 0
    assert result.summary["step"] == total and math.isfinite(result.summary["final_loss"])
    assert result.summary["epochs"] == pytest.approx(total / 6)  # 96 images at batch 16
    records = read_jsonl(out / "metrics.jsonl")
    epochs = [r for r in records if "epoch_loss" in r]
    assert epochs[-1]["step"] == total  # the last (possibly partial) epoch is logged
    # The schedule runs to the planned end, whatever train.epochs says: every logged rate is
    # the cosine of the planned total (exactly, so that it holds however few steps a busy
    # machine plans), and the last log falls in the run's last logging interval.
    from selfsup.optim import lr_factor, scaled_lr

    peak, warmup = scaled_lr(cfg.optim, cfg.train.batch_size), round(cfg.optim.warmup_epochs * 6)
    logged = [(r["step"], r["lr"]) for r in records if "lr" in r]
    assert [lr for _, lr in logged] == pytest.approx([peak * lr_factor(s - 1, total, warmup) for s, _ in logged])
    assert logged[-1][0] >= total - cfg.train.log_every + 1  # the last log is within the last interval
    # Resumed from an earlier checkpoint, the run reads its plan and ends where it did.
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for p in sorted((copy / "checkpoints").iterdir())[-2:]:
        p.unlink()
    (copy / ".lock").unlink(missing_ok=True)
    pretrain(cfg, out=copy, resume=True, log=lambda s: None)
    assert json.loads((copy / PLAN).read_text()) == plan
    assert_same_state(final_state(copy), final_state(out))


def test_budget_scale_plans_the_scaled_minutes(shared_folder: Path, tmp_path: Path) -> None:
    from selfsup.train.plan import wall_minutes

    assert wall_minutes(None, 2.0) is None and wall_minutes(10, 1.5) == 15
    lines: list[str] = []
    budget = {"train.time_budget": 0.01, "train.budget_scale": 3.0, "train.replan": False}
    cfg = load_config(None, tiny_overrides(shared_folder, **budget))
    pretrain(cfg, out=tmp_path / "run", log=lines.append)
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert plan["time_budget_min"] == pytest.approx(0.03)
    assert plan["total_steps"] == max(1, math.floor(60 * 0.03 / plan["seconds_per_step"]))
    assert any(line.startswith("time budget 0.01 x 3 = 0.03 min:") for line in lines)
    # Re-planning aims at the scaled minutes too (the unscaled 0.6 s would cut the run to a third).
    replanned = _budget_run(shared_folder, tmp_path / "replanned", 0.01, **{"train.budget_scale": 3.0})
    assert replanned["summary"]["train_time_s"] > 0.6 * 60 * 0.03
    with pytest.raises(ConfigError, match="train.budget_scale"):
        load_config(None, tiny_overrides(shared_folder, **{"train.budget_scale": 0}))


def test_progressive_resizing_trains_small_views_first(
    shared_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import selfsup.train.loop as loop

    sizes: list[int | None] = []
    real = loop.train_step

    def recording(*args: Any, **kwargs: Any) -> Any:
        sizes.append(args[3].size)  # the step's Batch record
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", recording)
    overrides = tiny_overrides(shared_folder, **{"train.low_res": 16, "train.low_res_until": 0.5})
    pretrain(load_config(None, overrides), out=tmp_path / "run", log=lambda s: None)
    assert sizes == [16] * 6 + [None] * 6  # 12 steps, the first half at 16 px
    with pytest.raises(ConfigError, match="train.low_res"):
        load_config(None, tiny_overrides(shared_folder, **{"train.low_res": 4}))


def _budget_run(shared_folder: Path, out: Path, minutes: float, **extra: Any) -> dict:
    from selfsup.train.plan import PLAN

    cfg = load_config(None, tiny_overrides(shared_folder, **{"train.time_budget": minutes, **extra}))
    result = pretrain(cfg, out=out, log=lambda s: None)
    return {**json.loads((out / PLAN).read_text()), "summary": result.summary}


def _plant_delay(monkeypatch: pytest.MonkeyPatch, module: Any, seconds: float | Callable[[], float]) -> None:
    """Make ``module.train_step`` sleep ``seconds`` (or what ``seconds()`` says) before each step."""
    real = module.train_step

    def delayed(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds() if callable(seconds) else seconds)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "train_step", delayed)


def test_time_budget_holds_when_steps_slow_down_after_the_plan(
    shared_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A planted slowdown: each step gets three planned step times slower after the plan is measured."""
    import selfsup.train.loop as loop_module
    from selfsup.train.plan import PLAN

    delay: list[float] = []  # relative to the measured pace, so a busy machine plans no differently

    def three_planned_steps() -> float:
        if not delay:  # the first plan's pace (re-plans rewrite the file with the slowed one)
            delay.append(3 * json.loads((tmp_path / "run" / PLAN).read_text())["seconds_per_step"])
        return delay[0]

    _plant_delay(monkeypatch, loop_module, three_planned_steps)  # the loop's steps, not the plan's timing
    budget_s = 60 * 0.06
    run = _budget_run(shared_folder, tmp_path / "run", 0.06, **{"train.keep_checkpoints": 1000})
    assert run["total_steps"] * delay[0] > 2 * budget_s  # the first plan alone would overrun by more than 2x
    assert run["replans"] and run["replans"][-1]["total_steps"] < run["total_steps"]
    assert run["summary"]["step"] == run["replans"][-1]["total_steps"]
    assert run["summary"]["train_time_s"] < 1.5 * budget_s
    # Every re-plan was saved with a checkpoint that holds the new total.
    from selfsup.checkpoint import load_latest

    loaded = load_latest(tmp_path / "run")
    assert loaded is not None and loaded[0]["total_steps"] == run["summary"]["step"]
    # Resumed from a checkpoint written after a re-plan, the run heads for that checkpoint's total.
    first = run["replans"][0]
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "run", copy)
    (copy / ".lock").unlink(missing_ok=True)
    for p in (copy / "checkpoints").iterdir():
        if int(p.name.split("-")[1].split(".")[0]) > first["step"]:
            p.unlink()
    assert (copy / "checkpoints" / f"step-{first['step']:09d}.pt").is_file()
    lines: list[str] = []
    cfg = load_config(
        None, tiny_overrides(shared_folder, **{"train.time_budget": 0.06, "train.keep_checkpoints": 1000})
    )
    pretrain(cfg, out=copy, resume=True, log=lines.append)
    assert f"(step {first['step']}/{first['total_steps']})" in next(x for x in lines if x.startswith("resuming"))


def test_time_budget_uses_the_time_when_the_plan_was_measured_too_slow(
    shared_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other way round: the plan is timed while the machine is busy (a planted 0.5 s per step)."""
    import selfsup.train.plan as plan_module

    _plant_delay(monkeypatch, plan_module, 0.5)  # what the plan times; the loop keeps its own
    budget_s = 60 * 0.06
    run = _budget_run(shared_folder, tmp_path / "run", 0.06)
    assert run["replans"] and run["replans"][-1]["total_steps"] > run["total_steps"]
    assert run["summary"]["train_time_s"] > 0.6 * budget_s  # the first plan alone would stop far sooner
    # With re-planning off the first plan is kept, whatever the pace.
    still = _budget_run(shared_folder, tmp_path / "fixed", 0.06, **{"train.replan": False})
    assert "replans" not in still and still["summary"]["step"] == still["total_steps"]
