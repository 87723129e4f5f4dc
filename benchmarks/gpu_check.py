"""GPU figures in one command: pipeline throughput, and two recipes for about two minutes each.

Written to spend a few minutes of a lent GPU on measuring, not on debugging: it runs on
the CPU with ``--smoke`` (tiny sizes, seconds; part of the test suite), writes every
record as soon as it has it, and skips what would overrun ``--deadline``.

    python benchmarks/gpu_check.py --out gpu-check                 # on one H100: ~6-7 minutes
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu-smoke    # on a CPU: seconds

What it measures (see ``pipelines.py`` for the pipelines):

1. views/s of ``bare``, ``selfsup``, ``seed_style`` and ``lightly`` for the seed's
   pre-activation ResNet-26 and for ResNet-18 (CIFAR stem), batch 512, bf16, compile
   off; then ``bare`` and ``selfsup`` with ``torch.compile`` (the PIL pipelines are
   bound by their workers, which compiling cannot help). Each with peak GPU memory and
   the GPU's busy fraction (NVML through ``torch.cuda.utilization``, else
   ``nvidia-smi``), timed with CUDA events after warm-up steps.
2. ``configs/seed000_simclr.yaml`` and ``configs/simclr_resnet18.yaml`` trained through
   ``selfsup.pretrain`` for as many epochs as fit ``--recipe-seconds`` (planned from a
   short timing of the recipe's own step; warm-up scaled with the epochs), then kNN and
   linear top-1 on the full test set; seconds per epoch and the projection of the
   recipe's full epoch count.

Output in ``--out``: ``results.jsonl`` (one record per measurement), ``table.md`` (the
README table), ``machine.json`` (machine, command, date) and ``env.json``; the same JSON
lines and table on stdout. lightly is optional: without it its rows say ``skipped``. On a
machine without internet, bring it as wheels (``pip download lightly -d .whl`` here, carry
``.whl``) and pass ``--wheels .whl``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(1, str(REPO / "src"))  # the checkout's selfsup, installed or not

import torch  # noqa: E402

from pipelines import PIPELINES, setup  # noqa: E402

RECIPES = {"seed000": "configs/seed000_simclr.yaml", "resnet18": "configs/simclr_resnet18.yaml"}
BACKBONES = ("preact_resnet26", "resnet18")
EAGER_PIPELINES = ("bare", "selfsup", "seed_style", "lightly")
COMPILED_PIPELINES = ("bare", "selfsup")


class Recorder:
    """Prints each record as a JSON line and appends it to ``results.jsonl``."""

    def __init__(self, out: Path) -> None:
        self.path = out / "results.jsonl"
        self.records: list[dict[str, Any]] = []

    def __call__(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        line = json.dumps(record)
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


class BusySampler:
    """Samples the GPU's busy fraction in a thread while a measurement runs (None on a CPU)."""

    def __init__(self, device: torch.device, interval: float = 0.1) -> None:
        self.device, self.interval = device, interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read = self._reader() if device.type == "cuda" else None

    def _reader(self) -> Callable[[], float] | None:
        try:
            torch.cuda.utilization(self.device)
            return lambda: float(torch.cuda.utilization(self.device))
        except Exception:  # noqa: BLE001 - pynvml missing or NVML unusable: try nvidia-smi
            pass
        if shutil.which("nvidia-smi") is None:
            return None
        index = self.device.index or 0
        cmd = ["nvidia-smi", "-i", str(index), "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]

        def smi() -> float:
            return float(subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip())

        try:
            smi()
        except (OSError, ValueError, subprocess.SubprocessError):
            return None
        return smi

    def __enter__(self) -> BusySampler:
        if self._read is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        read = self._read
        assert read is not None
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(read())
            except Exception:  # noqa: BLE001 - a failed sample is only a missing sample
                pass

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def fraction(self) -> float | None:
        """Mean busy fraction over the samples (NVML's 'utilization': kernel running or not)."""
        return statistics.mean(self.samples) / 100 if self.samples else None


def timed_steps(step: Callable[[], torch.Tensor], n: int, device: torch.device) -> float:
    """Seconds for ``n`` steps; on CUDA between two events, after the device finished."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    t0 = time.perf_counter()
    last = None
    for _ in range(n):
        last = step()
    if last is not None:
        float(last)
    return time.perf_counter() - t0


def throughput(name: str, backbone: str, compiled: bool, args: argparse.Namespace, data: str) -> dict[str, Any]:
    """One pipeline's views/s, busy fraction and peak memory, in this process."""
    base = {"part": "throughput", "pipeline": name, "backbone": backbone, "compile": compiled, "batch": args.batch}
    if name.startswith("lightly"):
        try:
            import lightly  # noqa: F401
        except ImportError:
            return {**base, "skipped": "lightly is not installed (pip install lightly, or --wheels DIR)"}
    ctx = setup(backbone, args.batch, args.precision, args.device, config=None, data=data)
    ctx.compile, ctx.compile_backend, ctx.workers = compiled, args.compile_backend, args.workers
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    t0 = time.perf_counter()
    step = PIPELINES[name](ctx)
    for _ in range(args.warmup):
        step()
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    warm_s = time.perf_counter() - t0
    with BusySampler(ctx.device) as busy:
        seconds = timed_steps(step, args.steps, ctx.device)
    record = {
        **base,
        "views_per_s": args.steps * 2 * args.batch / seconds,
        "seconds": seconds,
        "steps": args.steps,
        "warmup_s": warm_s,
        "gpu_busy": busy.fraction,
        "peak_memory_mb": torch.cuda.max_memory_allocated(ctx.device) / 2**20 if ctx.device.type == "cuda" else None,
        "bf16": ctx.bf16,
        "device": str(ctx.device),
        "workers": ctx.workers if name in ("seed_style", "lightly") else 0,
    }
    del step
    gc.collect()  # ends the DataLoader workers of this pipeline before the next one starts
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    return record


def recipe_run(key: str, args: argparse.Namespace, runs: Path, data: str) -> dict[str, Any]:
    """Train a recipe for about ``args.recipe_seconds`` of training, then evaluate it."""
    from pipelines import selfsup_pipeline
    from selfsup import pretrain
    from selfsup.config import load_config
    from selfsup.rundir import read_jsonl

    path = REPO / RECIPES[key]
    full = load_config(path)
    extra: dict[str, Any] = {"data.name": data, "train.precision": args.precision, "train.progress": False}
    if args.device != "auto":
        extra["train.device"] = args.device
    batch = 16 if args.smoke else full.train.batch_size
    # Plan the epochs from the recipe's own step, timed after warm-up steps.
    ctx = setup(full.model.backbone, batch, args.precision, args.device, config=path, data=data)
    if args.smoke:
        extra.update(
            {
                "data.subset": min(32, len(ctx.splits.train)),  # 2 steps an epoch: the code path, in seconds
                "train.batch_size": batch,
                "eval.linear_epochs": 2,
                "eval.train_subset": 256,
            }
        )
    step = selfsup_pipeline(ctx)
    for _ in range(args.warmup):
        step()
    step_s = timed_steps(step, args.steps, ctx.device) / args.steps
    steps_per_epoch = int(extra.get("data.subset") or len(ctx.splits.train)) // batch
    del step, ctx
    gc.collect()
    epochs = max(1, int(args.recipe_seconds / (step_s * steps_per_epoch)))
    epochs = min(epochs, full.train.epochs, 2 if args.smoke else full.train.epochs)
    warmup = full.optim.warmup_epochs * epochs / full.train.epochs
    extra.update({"train.epochs": epochs, "optim.warmup_epochs": warmup})
    cfg = load_config(path, extra)
    t0 = time.perf_counter()
    result = pretrain(cfg, out=runs / key, overwrite=True, log=lambda _m: None)
    wall = time.perf_counter() - t0
    epoch_times = [r["train_time_s"] for r in read_jsonl(runs / key / "metrics.jsonl") if "epoch_loss" in r]
    # The first epoch carries cuDNN's autotuning and allocator warm-up; later ones are steady.
    steady = (epoch_times[-1] - epoch_times[0]) / (len(epoch_times) - 1) if len(epoch_times) > 1 else epoch_times[0]
    m = result.metrics
    for name in ("metrics.json", "metrics.jsonl", "config.yaml"):
        (args.out / "runs" / key).mkdir(parents=True, exist_ok=True)
        shutil.copy(runs / key / name, args.out / "runs" / key / name)
    return {
        "part": "recipe",
        "recipe": RECIPES[key],
        "backbone": cfg.model.backbone,
        "batch": batch,
        "epochs": epochs,
        "planned_step_s": step_s,
        "train_time_s": result.summary["train_time_s"],
        "first_epoch_s": epoch_times[0],
        "s_per_epoch": steady,
        "full_recipe_epochs": full.train.epochs,
        "full_recipe_minutes": full.train.epochs * steady / 60,
        "views_per_s": result.summary["views_per_s"],
        "final_loss": result.summary["final_loss"],
        "knn_top1": m.get("knn_top1"),
        "linear_top1": m.get("linear_top1"),
        "eval_time_s": m.get("eval_time_s"),
        "wall_s": wall,
        "peak_memory_mb": result.summary["peak_memory_mb"],
    }


def environment(device: str) -> dict[str, Any]:
    """What ran the measurements."""
    from selfsup.runtime import resolve_device

    dev = resolve_device(device)
    env: dict[str, Any] = {
        "part": "env",
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "device": str(dev),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        env.update(gpu=props.name, gpu_memory_gb=props.total_memory / 2**30, sms=props.multi_processor_count)
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


def table(records: list[dict[str, Any]]) -> str:
    """The README table: throughput with ratios, then the recipes."""
    lines = [
        "| backbone | compile | pipeline | views/s | of bare | GPU busy | peak MB |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    rows = [r for r in records if r.get("part") == "throughput"]
    for r in rows:
        if "skipped" in r or "error" in r:
            why = r.get("skipped") or r["error"]
            lines.append(f"| {r['backbone']} | {r['compile']} | {r['pipeline']} | {why} | | | |")
            continue
        bare = next(
            (
                b
                for b in rows
                if b["pipeline"] == "bare"
                and b["backbone"] == r["backbone"]
                and b["compile"] == r["compile"]
                and "views_per_s" in b
            ),
            None,
        )
        ratio = f"{r['views_per_s'] / bare['views_per_s']:.2f}" if bare else "-"
        busy = f"{r['gpu_busy']:.0%}" if r.get("gpu_busy") is not None else "-"
        mem = f"{r['peak_memory_mb']:.0f}" if r.get("peak_memory_mb") is not None else "-"
        vps = f"{r['views_per_s']:.0f}"
        lines.append(f"| {r['backbone']} | {r['compile']} | {r['pipeline']} | {vps} | {ratio} | {busy} | {mem} |")
    for backbone in BACKBONES:
        got = {
            r["pipeline"]: r["views_per_s"]
            for r in rows
            if r["backbone"] == backbone and not r["compile"] and "views_per_s" in r
        }
        if "selfsup" in got and "lightly" in got:
            lines.append(f"\n{backbone}: selfsup / lightly = {got['selfsup'] / got['lightly']:.1f}x")
    recipes = [r for r in records if r.get("part") == "recipe"]
    if recipes:
        lines += [
            "",
            "| recipe | epochs run | s/epoch | first epoch s | full recipe (min) | kNN top-1 | linear top-1 |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in recipes:
            if "error" in r or "skipped" in r:
                lines.append(f"| {r['recipe']} | {r.get('skipped') or r['error']} | | | | | |")
                continue
            lines.append(
                f"| {r['recipe']} | {r['epochs']} | {r['s_per_epoch']:.2f} | {r['first_epoch_s']:.1f} | "
                f"{r['full_recipe_epochs']} ep: {r['full_recipe_minutes']:.1f} | {r['knn_top1']:.4f} | "
                f"{r['linear_top1']:.4f} |"
            )
    return "\n".join(lines)


def install_wheels(folder: str) -> None:
    """``pip install --no-index`` lightly from a folder of wheels (no internet on the GPU machine)."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", folder, "lightly"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        print(json.dumps({"part": "wheels", "error": done.stderr.strip().splitlines()[-1:]}), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for results.jsonl, table.md, env.json")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks every code path in seconds")
    p.add_argument("--data", default=None, help="dataset (default cifar10, the bundled JPEGs)")
    p.add_argument("--device", default=None, help="default auto (cpu with --smoke)")
    p.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        help="default bf16 (auto with --smoke: bf16 that a CPU only emulates makes the smoke run 30 times slower)",
    )
    p.add_argument("--batch", type=int, default=None, help="images per step in part 1 (default 512; 8 with --smoke)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 30)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: every core)")
    p.add_argument("--compile-backend", help="torch.compile backend (default inductor; eager with --smoke)")
    p.add_argument("--recipe-seconds", type=float, default=None, help="training time per recipe (default 110)")
    p.add_argument("--deadline", type=float, help="skip what starts after this many seconds (default 420)")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: throughput, compile, recipes")
    p.add_argument("--wheels", help="install lightly from this folder of wheels first")
    p.add_argument(
        "--pipelines",
        default=",".join(EAGER_PIPELINES),
        help=f"comma-separated eager pipelines of part 1 (default {','.join(EAGER_PIPELINES)}; "
        f"the compiled rows are those of {','.join(COMPILED_PIPELINES)} among them; see pipelines.py)",
    )
    args = p.parse_args(argv)
    unknown = set(args.pipelines.split(",")) - set(PIPELINES)
    if unknown:
        p.error(f"unknown pipelines {sorted(unknown)}; known: {', '.join(PIPELINES)}")
    smoke = args.smoke
    defaults = {
        "data": "cifar10",
        "device": "cpu" if smoke else "auto",
        "batch": 8 if smoke else 512,
        "steps": 2 if smoke else 30,
        "warmup": 1 if smoke else 5,
        "workers": 2 if smoke else (os.cpu_count() or 2),
        "compile_backend": "eager" if smoke else "inductor",
        "recipe_seconds": 1.0 if smoke else 110.0,
        "deadline": 600.0 if smoke else 420.0,
        "precision": "auto" if smoke else "bf16",
    }
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.jsonl").unlink(missing_ok=True)
    if args.wheels:
        install_wheels(args.wheels)
    started = time.perf_counter()
    record = Recorder(args.out)
    env = environment(args.device)
    (args.out / "env.json").write_text(json.dumps(env, indent=2) + "\n")
    record(env)
    skip = set(filter(None, args.skip.split(",")))

    def attempt(base: dict[str, Any], work: Callable[[], dict[str, Any]]) -> None:
        """Run one measurement unless past the deadline; a failure is a record, not the end."""
        if time.perf_counter() - started > args.deadline:
            record({**base, "skipped": f"past the {args.deadline:.0f} s deadline"})
            return
        try:
            record(work())
        except Exception as e:  # noqa: BLE001 - record the failure, measure the rest
            record({**base, "error": f"{type(e).__name__}: {e}"[:300]})

    pipelines = args.pipelines.split(",")
    plan: list[tuple[str, bool]] = []
    if "throughput" not in skip:
        plan += [(name, False) for name in pipelines]
    if "compile" not in skip:
        plan += [(name, True) for name in COMPILED_PIPELINES if name in pipelines]
    # Eager rows of both backbones first, the recipes next, compiled rows last: if the
    # lease runs short, what is lost is the slowest and least essential part.
    for compiled in (False, True):
        for backbone in BACKBONES:
            for name, c in plan:
                if c == compiled:
                    base = {
                        "part": "throughput",
                        "pipeline": name,
                        "backbone": backbone,
                        "compile": c,
                        "batch": args.batch,
                    }
                    attempt(base, partial(throughput, name, backbone, c, args, args.data))
        if not compiled and "recipes" not in skip:
            with tempfile.TemporaryDirectory(prefix="gpu-check-runs-") as runs:
                for key in RECIPES:
                    base = {"part": "recipe", "recipe": RECIPES[key]}
                    attempt(base, partial(recipe_run, key, args, Path(runs), args.data))
    text = table(record.records)
    text += (
        f"\n\n{env.get('gpu') or env.get('cpu')}, torch {env['torch']}, {env['date']}, "
        f"{time.perf_counter() - started:.0f} s in all\n"
    )
    from selfsup.lab.results import write_benchmark

    # results.jsonl and table.md again, with machine.json (a docs `bench` block reads it).
    write_benchmark(args.out, record.records, text.strip(), time.perf_counter() - started, device=env["device"])
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
