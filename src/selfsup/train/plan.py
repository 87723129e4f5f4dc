"""Training for a time budget: the number of steps planned once, from measured step times.

``train.time_budget`` (minutes) replaces ``train.epochs``: before the first step the run
times a few steps of a throwaway copy of the model, fixes the number of steps that fit
the budget, and saves it in ``RUN_DIR/plan.json``. Every schedule follows that number
(the learning rate's warm-up and cosine decay, EMA momentum and temperatures through
``Batch.progress``, ramp-ups through the epoch), so they all end when the budget does;
``--resume`` reads the saved plan and continues the same schedule. Evaluation is not
part of the budget.

A plan measured once can be wrong: another process may share the cores while the
steps are timed, or start later. With ``train.replan`` (the default) the loop looks
again about 20 times in the run: from the seconds per step since its last look and the
budget left, it moves the end of the run (and with it every schedule) when that changes
the total by more than :data:`REPLAN_TOLERANCE`, records the new total in ``plan.json``
(``replans``) and saves a checkpoint, which holds the total too; ``--resume`` continues
from the total of the checkpoint it loads.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..distributed import broadcast_object, rank
from ..fileio import write_atomic
from .job import Job, view_augment
from .sampler import next_batch
from .step import StepContext, train_step

PLAN = "plan.json"
#: A re-plan that moves the total by this fraction or less (or by one step) is not worth a checkpoint.
REPLAN_TOLERANCE = 0.02
#: About this many looks at the step time in a budgeted run.
REPLANS_PER_RUN = 20
#: Untimed steps (allocator, kernels, caches warm up), then timed ones.
WARMUP_STEPS, TIMED_STEPS = 2, 4


def wall_minutes(time_budget: float | None, budget_scale: float = 1.0) -> float | None:
    """The wall-clock minutes a run trains: ``train.time_budget`` times ``train.budget_scale``."""
    return None if time_budget is None else time_budget * budget_scale


def read_plan(run_dir: Path) -> dict[str, Any] | None:
    """The saved plan of a run, or None."""
    path = run_dir / PLAN
    return json.loads(path.read_text()) if path.is_file() else None


def time_steps(step: Callable[[int], None], device: torch.device) -> float:
    """Seconds per step of ``step(i)``, after :data:`WARMUP_STEPS` untimed ones."""
    for i in range(WARMUP_STEPS):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for i in range(TIMED_STEPS):
        step(WARMUP_STEPS + i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / TIMED_STEPS


def plan_steps(run_dir: Path, minutes: float, seconds_per_step: Callable[[], float], write: bool) -> dict[str, Any]:
    """The run's plan: the saved one, or a new one from a measurement.

    Args:
        run_dir: The run directory.
        minutes: The wall-clock minutes (:func:`wall_minutes`).
        seconds_per_step: Measures a step (called only when there is no saved plan).
        write: Save a new plan (rank 0).

    Returns:
        ``{"total_steps", "seconds_per_step", "time_budget_min"}``.
    """
    saved = read_plan(run_dir)
    if saved is not None:
        return saved
    step_s = seconds_per_step()
    plan = {
        "total_steps": max(1, math.floor(60 * minutes / step_s)),
        "seconds_per_step": step_s,
        "time_budget_min": minutes,
        "planned_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if write:
        write_atomic(run_dir / PLAN, (json.dumps(plan, indent=2) + "\n").encode())
    return plan


def throwaway(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, torch.optim.Optimizer]:
    """Copies of a model and its optimizer (bound to the copy), to time steps on, leaving the run's untouched."""
    twin, opt = copy.deepcopy((model, optimizer))  # one memo: the copied optimizer holds the copied parameters
    return twin, opt


def budget_total(job: Job, log: Callable[[str], None]) -> int:
    """The steps of ``job`` that fit ``train.time_budget``: the saved plan, or one from timing a throwaway copy.

    Every rank follows rank 0's plan. The timing draws nothing from the run's random streams.
    """
    t, device = job.cfg.train, job.ctx.device
    ctx = StepContext(device, job.ctx.bf16)  # the copy trains alone, whatever wraps the run's model

    def seconds_per_step() -> float:
        twin, opt = throwaway(job.model, job.optimizer)
        augment = view_augment(job.cfg, twin)
        rng = torch.get_rng_state()  # timing must not change what the run draws

        def step(i: int) -> None:
            train_step(twin, opt, augment, next_batch(job.sampler, i, job.data, torch.Generator().manual_seed(i)), ctx)

        try:
            return time_steps(step, device)
        finally:
            torch.set_rng_state(rng)

    minutes = wall_minutes(t.time_budget, t.budget_scale) or 0.0
    plan = plan_steps(job.run_dir, minutes, seconds_per_step, write=rank() == 0)
    total = int(broadcast_object(plan["total_steps"]))
    scaled = f" x {t.budget_scale:g} = {minutes:g}" if t.budget_scale != 1 else ""
    log(
        f"time budget {t.time_budget:g}{scaled} min: {total} steps ({total / job.sampler.steps_per_epoch:.2f} epochs) "
        f"at {plan['seconds_per_step']:.3f} s per step"
    )
    return total


def replan_total(step: int, train_time: float, budget_s: float, seconds_per_step: float) -> int:
    """The total number of steps that ends the run when the budget does, at the measured pace.

    Args:
        step: Steps done.
        train_time: Seconds of training so far.
        budget_s: The budget in seconds.
        seconds_per_step: The recent pace.

    Returns:
        ``step`` plus the whole steps that fit the time left (``step`` when none does).
    """
    left = budget_s - train_time
    return step + max(0, math.floor(left / max(seconds_per_step, 1e-9)))


def record_replan(run_dir: Path, entry: dict[str, Any]) -> None:
    """Append one re-plan (step, new total, pace) to ``plan.json``'s ``replans``."""
    plan = read_plan(run_dir) or {}
    plan.setdefault("replans", []).append(entry)
    write_atomic(run_dir / PLAN, (json.dumps(plan, indent=2) + "\n").encode())
