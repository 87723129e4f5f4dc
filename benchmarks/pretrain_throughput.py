"""Pretraining throughput, side by side in one run: views/s, ratios and peak memory.

Each measurement runs in a fresh process (so peak memory is its own); pipelines take
turns over several rounds (bare, selfsup, seed_style, lightly, ..., then again), and the
median per pipeline is reported, so that slow drift of a shared machine does not favour
whichever pipeline ran first. See ``pipelines.py`` for what each pipeline is.

    python benchmarks/pretrain_throughput.py                    # all pipelines, 3 rounds
    python benchmarks/pretrain_throughput.py --pipelines bare,selfsup --rounds 5
    python benchmarks/pretrain_throughput.py --pipelines bare,selfsup \
        --configs configs/quick.yaml,configs/seed000_simclr.yaml   # two recipes, in turns

Prints one JSON line per measurement, then a table of medians with ratios to ``bare``.
The same run measures the machine's matrix-product peak (``--peak``: square matmuls in
the training precision, in their own process) and the FLOPs of one training step per
view (PyTorch's FLOP counter on the bare step: forward and backward), and prints the
bare step as a fraction of that peak: how much of the machine the model step uses.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

DEFAULT = "bare,selfsup,seed_style,lightly,lightly_tuned"
PHYSICAL_LIMIT = 580.0  # views/s: ~190 GFLOP/s fp32 peak of 2 cores / ~330 MFLOP per view (issue 6)


def matmul_peak(args: argparse.Namespace) -> dict[str, Any]:
    """The best GFLOP/s of square matrix products in the training precision, and the step's FLOPs per view."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pipelines import selfsup_model, setup

    ctx = setup(args.backbone, args.batch, args.precision, args.device, args.threads, args.config)
    dtype = torch.bfloat16 if ctx.bf16 else torch.float32
    best, n = 0.0, args.peak_size
    a = torch.randn(n, n, device=ctx.device, dtype=dtype)
    b = torch.randn(n, n, device=ctx.device, dtype=dtype)
    for _ in range(3):  # warm-up
        a @ b
    for _ in range(args.peak_repeats):
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        c = a @ b
        float(c[0, 0])
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    # FLOPs of one training step (forward + backward) of the bare pipeline's model.
    from pipelines import model_step

    model, opt = selfsup_model(ctx)
    views = torch.randn(2 * ctx.batch, 3, 32, 32, device=ctx.device).contiguous(memory_format=torch.channels_last)
    with FlopCounterMode(display=False) as counter:
        model_step(model, opt, views, ctx)
    per_view = counter.get_total_flops() / len(views)
    return {
        "pipeline": "matmul_peak",
        "gflops": best,
        "dtype": str(dtype).removeprefix("torch."),
        "size": n,
        "step_mflop_per_view": per_view / 1e6,
        "peak_views_per_s": best * 1e9 / per_view,
        "device": str(ctx.device),
        "threads": torch.get_num_threads(),
    }


def run_labels(pipelines: list[str], configs: list[str]) -> list[tuple[str, str | None, str]]:
    """(pipeline, recipe, label) for every measurement of a round, pipelines within each recipe.

    One recipe (or none: the quick recipe) labels rows by pipeline alone; several add the
    recipe's file name (``bare@seed000_simclr``), each compared with its own bare step.
    """
    if not configs:
        return [(p, None, p) for p in pipelines]
    if len(configs) == 1:
        return [(p, configs[0], p) for p in pipelines]
    stems = [os.path.splitext(os.path.basename(c))[0] for c in configs]
    if len(set(stems)) < len(stems):
        raise SystemExit(f"--configs: two recipes share a file name: {configs}")
    return [(p, c, f"{p}@{stem}") for c, stem in zip(configs, stems, strict=True) for p in pipelines]


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Time one pipeline in this process."""
    import torch

    from pipelines import PIPELINES, setup

    ctx = setup(args.backbone, args.batch, args.precision, args.device, args.threads, args.config)
    step = PIPELINES[name](ctx)
    for _ in range(args.warmup):
        step()
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    last = None
    for _ in range(args.steps):
        last = step()
    if last is not None:  # one sync at the end, as the training loop syncs at log intervals
        float(last)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if ctx.device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated() / 2**20, "cuda_allocated"
    else:
        self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        peak, kind = (self_kb + child_kb) / 1024, "rss_main_plus_largest_worker"
    return {
        "pipeline": name,
        "config": args.config or "configs/quick.yaml",
        "views_per_s": args.steps * 2 * args.batch / seconds,
        "seconds": seconds,
        "steps": args.steps,
        "batch": args.batch,
        "backbone": args.backbone,
        "peak_memory_mb": peak,
        "memory": kind,
        "device": str(ctx.device),
        "bf16": ctx.bf16,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="preact_resnet26")
    p.add_argument("--batch", type=int, default=256, help="images per step (two views each)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3, help="measurements per pipeline, taken in turns")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--pipelines", default=DEFAULT)
    p.add_argument("--peak-size", type=int, default=2048, help="side of the square matrices of the peak")
    p.add_argument("--peak-repeats", type=int, default=20, help="timed products (the best one counts)")
    p.add_argument("--no-peak", dest="peak", action="store_false", help="skip the matrix-product peak")
    p.add_argument(
        "--configs",
        default="",
        help="comma-separated recipes (YAML) whose model and augmentation every pipeline is built from, "
        "measured in turns like the pipelines (default: the quick recipe)",
    )
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--only", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only:
        record = matmul_peak(args) if args.only == "matmul_peak" else measure(args.only, args)
        print(json.dumps(record), flush=True)
        return
    skip = ("pipelines", "rounds", "only", "peak", "configs", "config")
    passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in skip]
    configs = [c for c in args.configs.split(",") if c]
    peak = None
    if args.peak:
        first = [f"--config={configs[0]}"] if configs else []  # the peak's step FLOPs: the first recipe's model
        out = subprocess.run(
            [sys.executable, __file__, *passthrough, *first, "--only", "matmul_peak"], capture_output=True, text=True
        )
        if out.returncode == 0:
            peak = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(peak), flush=True)
        else:
            print(json.dumps({"pipeline": "matmul_peak", "error": out.stderr.strip().splitlines()[-1:]}), flush=True)

    jobs_list = run_labels(args.pipelines.split(","), configs)
    jobs = {label: (name, config) for name, config, label in jobs_list}
    names = list(jobs)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            pipeline, config = jobs[name]
            recipe = [f"--config={config}"] if config else []
            out = subprocess.run(
                [sys.executable, __file__, *passthrough, *recipe, "--only", pipeline], capture_output=True, text=True
            )
            if out.returncode != 0:
                print(json.dumps({"pipeline": name, "error": out.stderr.strip().splitlines()[-1:]}), flush=True)
                continue
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            rec["label"] = name
            runs[name].append(rec)
            print(json.dumps(rec), flush=True)
    medians = {n: statistics.median(r["views_per_s"] for r in rs) for n, rs in runs.items() if rs}
    bares = {jobs[n][1]: v for n, v in medians.items() if jobs[n][0] == "bare"}  # per recipe
    bare = bares.get(configs[0] if configs else None)
    print()
    print("| pipeline | views/s (median) | min-max | ratio to bare | peak memory (MB) |")
    print("|---|---:|---:|---:|---:|")
    for n, rs in runs.items():
        if not rs:
            continue
        vs = [r["views_per_s"] for r in rs]
        own = bares.get(jobs[n][1])  # the bare step of the same recipe
        ratio = f"{medians[n] / own:.2f}" if own else "-"
        print(
            f"| {n} | {medians[n]:.0f} | {min(vs):.0f}-{max(vs):.0f} | {ratio} | "
            f"{max(r['peak_memory_mb'] for r in rs):.0f} |"
        )
    if "selfsup" in medians:
        print()
        for other in ("lightly", "lightly_tuned", "seed_style"):
            if other in medians:
                print(f"selfsup / {other}: {medians['selfsup'] / medians[other]:.2f}x")
        if bare:
            print(f"bare / physical fp32 limit ({PHYSICAL_LIMIT:.0f} views/s): {bare / PHYSICAL_LIMIT:.2f}")
    if len(configs) > 1:  # each recipe against the first, pipeline by pipeline, side by side in this run
        print()
        firsts = {pl: label for pl, c, label in jobs_list if c == configs[0]}  # each pipeline, first recipe
        for pl, c, label in jobs_list:
            if c != configs[0] and label in medians and firsts[pl] in medians:
                print(f"{label} / {firsts[pl]}: {medians[label] / medians[firsts[pl]]:.2f}x")
    if bare and peak:
        print(
            f"matrix-product peak {peak['gflops']:.0f} GFLOP/s ({peak['dtype']}, {peak['size']}^2); a step costs "
            f"{peak['step_mflop_per_view']:.0f} MFLOP per view, so the peak allows {peak['peak_views_per_s']:.0f} "
            f"views/s and the bare step runs at {bare / peak['peak_views_per_s']:.2f} of it"
        )
    first_pipeline = next(iter(runs.values()), [])
    run0 = first_pipeline[0] if first_pipeline else None
    if run0:
        print(
            f"\n{run0['backbone']}, batch {run0['batch']} images ({2 * run0['batch']} views), device "
            f"{run0['device']}, bf16 {run0['bf16']}, {run0['threads']} threads, {args.steps} timed steps x "
            f"{args.rounds} rounds; memory: {run0['memory']}"
        )


if __name__ == "__main__":
    main()
