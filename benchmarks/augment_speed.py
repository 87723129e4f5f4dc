"""The batch augmentation alone: milliseconds per batch, and colour jitter's two paths side by side.

On a GPU, the augmentation of a CIFAR batch is bound by kernel launches, not arithmetic;
on a CPU it is the other way round. ``selfsup.augment.ops.color_jitter`` therefore has
two paths (grouped by op order on a CPU, whole-batch rounds on a GPU); this times both on
the device it runs on, and the whole default augmentation (parameters drawn on the host,
applied on the device) by its per-op path, its fixed path and (on a GPU) the fixed path
compiled (``selfsup.augment.batch.apply_fixed``), for the quick recipe's SimCLR views.

    python benchmarks/augment_speed.py --out results/augment-speed-h200        # a GPU: seconds
    python benchmarks/augment_speed.py --smoke --out /tmp/augment-smoke        # any CPU: seconds

Writes ``results.jsonl``, ``table.md`` and ``machine.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(1, str(REPO / "src"))

import torch  # noqa: E402

from gpu_check import timed_steps  # noqa: E402
from pipelines import selfsup_model, setup  # noqa: E402


def summed(step: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """``step`` returning a scalar (``timed_steps`` reads the last one on a CPU to wait for it)."""
    return lambda: step().sum()


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """ms per batch of ``2 * batch`` views: the whole augmentation (each path), then each jitter path."""
    from selfsup.augment import BatchAugment, color_jitter, sample_params
    from selfsup.augment.ops import to_float
    from selfsup.train.loop import view_augment

    ctx = setup("preact_resnet26", args.batch, "fp32", args.device, data=args.data)
    model, _ = selfsup_model(ctx)
    aug = view_augment(ctx.cfg, model)  # type: ignore[arg-type]  # selfsup_model builds a Method
    spec = aug.augments[0].cfg
    images = torch.from_numpy(ctx.splits.train.images[: args.batch]).to(ctx.device)
    views = 2 * args.batch
    gen = torch.Generator().manual_seed(0)
    x = to_float(images.repeat(2, 1, 1, 1))
    params = sample_params(spec, views, x.shape[-2], x.shape[-1], gen)
    per_op, fixed = BatchAugment(spec, fixed=False), BatchAugment(spec, fixed=True)
    steps: dict[str, Callable[[], torch.Tensor]] = {
        "whole augmentation, per-op path": lambda: per_op(images, gen, 2),
        "whole augmentation, fixed path": lambda: fixed(images, gen, 2),
    }
    if ctx.device.type == "cuda":  # BatchAugment compiles on a GPU only
        compiled = BatchAugment(spec, compile=True, fixed=True)
        steps["whole augmentation, fixed path compiled"] = lambda: compiled(images, gen, 2)
    steps |= {
        "colour jitter, grouped": lambda: color_jitter(x, params, grouped=True),
        "colour jitter, rounds": lambda: color_jitter(x, params, grouped=False),
    }
    records = []
    for what, step in steps.items():
        for _ in range(args.warmup):
            step()
        seconds = timed_steps(summed(step), args.reps, ctx.device)
        rec = {"what": what, "device": str(ctx.device), "views": views, "ms": 1000 * seconds / args.reps}
        rec["views_per_s"] = views / (seconds / args.reps)
        records.append(rec)
        print(json.dumps(rec), flush=True)
    return records


def table(records: list[dict[str, Any]]) -> str:
    lines = ["| what | device | ms per batch | views/s |", "|---|---|---:|---:|"]
    for r in records:
        lines.append(f"| {r['what']} | {r['device']} | {r['ms']:.2f} | {r['views_per_s']:.0f} |")
    ms = {r["what"]: r["ms"] for r in records}
    g, rd = ms["colour jitter, grouped"], ms["colour jitter, rounds"]
    lines.append(f"\ngrouped / rounds: {g / rd:.2f} (above 1: the rounds are faster here), {records[0]['views']} views")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="folder for results.jsonl, table.md and machine.json")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (for the tests)")
    p.add_argument("--data", default="cifar10", help="dataset (default: the bundled CIFAR-10)")
    p.add_argument("--device", default="auto", help="default: a GPU where there is one")
    p.add_argument("--batch", type=int, help="images per batch, two views each (default 512; 8 with --smoke)")
    p.add_argument("--reps", type=int, help="timed batches per measurement (default 20; 2 with --smoke)")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    args = p.parse_args()
    args.batch = args.batch or (8 if args.smoke else 512)
    args.reps = args.reps or (2 if args.smoke else 20)
    t0 = time.perf_counter()
    records = measure(args)
    text = table(records)
    print()
    print(text)
    if args.out:
        from selfsup.lab.results import write_benchmark

        write_benchmark(args.out, records, text, time.perf_counter() - t0, device=records[0]["device"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
