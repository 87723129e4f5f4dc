"""Accuracy for a fixed wall-clock budget: selfsup against lightly's pipeline.

Both pretrain SimCLR with the seed's pre-activation ResNet-26 on the bundled CIFAR-10
(all 50,000 training images) for the same budget (default 20 minutes), one after the
other on the same machine; then both encoders are evaluated with the same code
(selfsup's feature extraction and weighted kNN, k=200, t=0.1, full train bank and test
split, each encoder with the normalisation it was trained with).

* selfsup: ``selfsup.pretrain`` with ``configs/quick.yaml``; the number of epochs is
  chosen so that training fills the budget (from a short calibration of its step time).
* lightly: its documented pipeline (see ``pipelines.py``) with its CIFAR-10 benchmark
  recipe (SGD lr 0.06 x batch/128, cosine decay), for as many steps as fit the budget
  (likewise calibrated), stopped at the budget at the latest.

    python benchmarks/budget.py                  # 20 minutes each, ~45 minutes in all
    python benchmarks/budget.py --minutes 5

Prints one JSON line per pipeline and a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pipelines import calibrated_step_seconds, cycle, lightly_parts, selfsup_pipeline, setup  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def knn_top1(encoder: torch.nn.Module, ctx: Any, mean: list[float], std: list[float]) -> float:
    from selfsup.eval import extract_features, knn_accuracy

    kw: dict[str, Any] = dict(mean=mean, std=std, device=ctx.device, batch_size=256, bf16=ctx.bf16)
    train = extract_features(encoder, ctx.splits.train.images, **kw)
    test = extract_features(encoder, ctx.splits.test.images, **kw)
    return knn_accuracy(
        train, torch.from_numpy(ctx.splits.train.labels), test, torch.from_numpy(ctx.splits.test.labels), 10, 200, 0.1
    )


def run_selfsup(ctx: Any, budget_s: float, out: Path) -> dict[str, Any]:
    from selfsup import pretrain
    from selfsup.config import apply_overrides

    step = selfsup_pipeline(ctx)
    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(8):
        last = step()
    float(last)
    step_s = (time.perf_counter() - t0) / 8
    steps_per_epoch = len(ctx.splits.train) // ctx.batch
    epochs = max(1, math.floor(budget_s / (step_s * steps_per_epoch)))
    cfg = apply_overrides(ctx.cfg, {"train.epochs": epochs, "train.eval_after": False, "train.progress": False})
    t0 = time.perf_counter()
    result = pretrain(cfg, out=out, overwrite=True, log=lambda s: None)
    train_s = time.perf_counter() - t0
    from selfsup.eval import load_run_model

    _, model, _ = load_run_model(out, ctx.device)
    acc = knn_top1(model.backbone, ctx, ctx.cfg.augment.mean, ctx.cfg.augment.std)
    return {
        "pipeline": "selfsup",
        "epochs": epochs,
        "steps": result.summary["step"],
        "train_s": train_s,
        "views_per_s": result.summary["views_per_s"],
        "knn_top1": acc,
    }


def run_lightly(ctx: Any, budget_s: float) -> dict[str, Any]:
    p = lightly_parts(ctx)
    model, criterion, opt, loader = p["model"], p["criterion"], p["opt"], p["loader"]
    batch = cycle(loader)

    def step() -> torch.Tensor:
        (x0, x1), _, _ = batch()
        loss = criterion(model(x0.to(ctx.device)), model(x1.to(ctx.device)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    step_s = calibrated_step_seconds(step, model, opt, warmup=3, timed=8)
    total = max(1, math.floor(budget_s / step_s))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    model.train()
    t0 = time.perf_counter()
    done = 0
    while done < total and time.perf_counter() - t0 < budget_s:
        step()
        scheduler.step()
        done += 1
    train_s = time.perf_counter() - t0
    acc = knn_top1(model.backbone, ctx, p["mean"], p["std"])
    return {
        "pipeline": "lightly",
        "epochs": done / len(loader),
        "steps": done,
        "train_s": train_s,
        "views_per_s": done * 2 * ctx.batch / train_s,
        "knn_top1": acc,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--pipelines", default="selfsup,lightly")
    p.add_argument("--keep", metavar="RUN_DIR", help="keep selfsup's run here (default: a temporary folder)")
    args = p.parse_args()
    ctx = setup("preact_resnet26", args.batch)
    budget = 60 * args.minutes
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep) if args.keep else Path(tmp) / "run"
        for name in args.pipelines.split(","):
            r = run_selfsup(ctx, budget, out) if name == "selfsup" else run_lightly(ctx, budget)
            r["knn_per_cpu_minute"] = r["knn_top1"] / (r["train_s"] / 60)
            r["budget_minutes"] = args.minutes
            results.append(r)
            print(json.dumps(r), flush=True)
    print()
    print("| pipeline | epochs | steps | training (min) | views/s | kNN top-1 (%) | kNN points per minute |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['pipeline']} | {r['epochs']:.2f} | {r['steps']} | {r['train_s'] / 60:.1f} | "
            f"{r['views_per_s']:.0f} | {100 * r['knn_top1']:.1f} | {100 * r['knn_per_cpu_minute']:.2f} |"
        )
    by = {r["pipeline"]: r for r in results}
    if {"selfsup", "lightly"} <= set(by):
        diff = 100 * (by["selfsup"]["knn_top1"] - by["lightly"]["knn_top1"])
        print(f"\nselfsup - lightly after {args.minutes:g} minutes: {diff:+.1f} kNN points")
    print(f"device {ctx.device}, bf16 {ctx.bf16}, {torch.get_num_threads()} threads, batch {args.batch}")


if __name__ == "__main__":
    main()
