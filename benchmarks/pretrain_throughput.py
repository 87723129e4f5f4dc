"""Pretraining throughput, side by side in one run: views/s, ratios and peak memory.

Each measurement runs in a fresh process (so peak memory is its own); pipelines take
turns over several rounds (bare, selfsup, seed_style, lightly, ..., then again), and the
median per pipeline is reported, so that slow drift of a shared machine does not favour
whichever pipeline ran first. See ``pipelines.py`` for what each pipeline is.

    python benchmarks/pretrain_throughput.py                    # all pipelines, 3 rounds
    python benchmarks/pretrain_throughput.py --pipelines bare,selfsup --rounds 5

Prints one JSON line per measurement, then a table of medians with ratios to ``bare``.
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


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Time one pipeline in this process."""
    import torch

    from pipelines import PIPELINES, setup

    ctx = setup(args.backbone, args.batch, args.precision, args.device, args.threads)
    step = PIPELINES[name](ctx)
    for _ in range(args.warmup):
        step()
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    last = None
    for _ in range(args.steps):
        last = step()
    float(last)  # one sync at the end, as the training loop syncs at log intervals
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
    p.add_argument("--only", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only:
        print(json.dumps(measure(args.only, args)), flush=True)
        return
    passthrough = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("pipelines", "rounds", "only")]

    names = args.pipelines.split(",")
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            out = subprocess.run(
                [sys.executable, __file__, *passthrough, "--only", name], capture_output=True, text=True
            )
            if out.returncode != 0:
                print(json.dumps({"pipeline": name, "error": out.stderr.strip().splitlines()[-1:]}), flush=True)
                continue
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            runs[name].append(rec)
            print(json.dumps(rec), flush=True)
    medians = {n: statistics.median(r["views_per_s"] for r in rs) for n, rs in runs.items() if rs}
    bare = medians.get("bare")
    print()
    print("| pipeline | views/s (median) | min-max | ratio to bare | peak memory (MB) |")
    print("|---|---:|---:|---:|---:|")
    for n, rs in runs.items():
        if not rs:
            continue
        vs = [r["views_per_s"] for r in rs]
        ratio = f"{medians[n] / bare:.2f}" if bare else "-"
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
    first = next(iter(next(iter(runs.values()))), None)
    if first:
        print(
            f"\n{first['backbone']}, batch {first['batch']} images ({2 * first['batch']} views), device "
            f"{first['device']}, bf16 {first['bf16']}, {first['threads']} threads, {args.steps} timed steps x "
            f"{args.rounds} rounds; memory: {first['memory']}"
        )


if __name__ == "__main__":
    main()
