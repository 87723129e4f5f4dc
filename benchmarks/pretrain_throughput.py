"""Pretraining throughput, side by side in one run: views/s and peak memory per pipeline.

Pipelines (same backbone, batch, optimizer, loss and precision):

* ``bare``: the model step alone on random tensors already in memory (the ceiling);
* ``selfsup``: selfsup's pipeline: uint8 data on the device, batch augmentation,
  the method's step, LARS; exactly :func:`selfsup.train.train_step`;
* ``seed_style``: what the seed reports ran: torchvision PIL transforms producing two
  views per image in a ``DataLoader`` with worker processes, feeding the same step.

Each pipeline runs in its own process (so peak memory is its own), one after another.
Prints one JSON line per pipeline, then a table with ratios to ``bare``::

    python benchmarks/pretrain_throughput.py                # preact_resnet26, batch 256
    python benchmarks/pretrain_throughput.py --steps 20 --precision fp32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

PIPELINES = ("bare", "selfsup", "seed_style")


def _setup(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from selfsup.config import load_config
    from selfsup.data import load_dataset
    from selfsup.methods import build_method
    from selfsup.optim import build_optimizer
    from selfsup.runtime import resolve_device, use_bf16
    from selfsup.train import resolve_config

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(
        args.config,
        {
            "model.backbone": args.backbone,
            "train.batch_size": args.batch,
            "train.precision": args.precision,
            "train.progress": False,
        },
    )
    splits = load_dataset(cfg.data.name, progress=False)
    cfg = resolve_config(cfg, splits)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = build_method(cfg, 10).to(device).to(memory_format=torch.channels_last).train()
    if args.compile:
        model.backbone.compile()
    opt = build_optimizer(model, cfg.optim, args.batch)
    return dict(cfg=cfg, splits=splits, device=device, bf16=use_bf16(args.precision, device), model=model, opt=opt)


def _model_step(model: Any, opt: Any, views: Any, device: Any, bf16: bool) -> Any:
    from selfsup.runtime import autocast

    with autocast(device, bf16):
        loss = model.training_step({"views": views})["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def _time(step: Any, n_warmup: int, n_steps: int, device: Any) -> float:
    import torch

    for _ in range(n_warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    last = None
    for _ in range(n_steps):
        last = step()
    float(last)  # one sync at the end, as the training loop does at log intervals
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Measure one pipeline in this process."""
    import torch

    s = _setup(args)
    model, opt, device, bf16 = s["model"], s["opt"], s["device"], s["bf16"]
    b = args.batch
    if name == "bare":
        views = torch.randn(2 * b, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)

        def step() -> Any:
            return _model_step(model, opt, views, device, bf16)

    elif name == "selfsup":
        from selfsup.augment import BatchAugment
        from selfsup.train import train_step

        aug = BatchAugment(s["cfg"].augment)
        images = torch.from_numpy(s["splits"].train.images).to(device)
        labels = torch.from_numpy(s["splits"].train.labels).to(device)
        state = {"i": 0}

        def step() -> Any:
            g = torch.Generator().manual_seed(state["i"])
            idx = torch.randint(0, len(images), (b,), generator=g).to(device)
            state["i"] += 1
            return train_step(
                model, opt, aug, images.index_select(0, idx), labels.index_select(0, idx), g, device, bf16
            )

    elif name == "seed_style":
        step = _seed_style_step(s, args)
    else:
        raise ValueError(name)
    seconds = _time(step, args.warmup, args.steps, device)
    views_per_s = args.steps * 2 * b / seconds
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        mem_kind = "cuda_allocated"
    else:
        self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        peak = (self_kb + child_kb) / 1024
        mem_kind = "rss_main_plus_largest_child"
    return {
        "pipeline": name,
        "backbone": args.backbone,
        "batch": b,
        "views_per_s": views_per_s,
        "seconds": seconds,
        "steps": args.steps,
        "peak_memory_mb": peak,
        "memory": mem_kind,
        "device": str(device),
        "bf16": bf16,
        "threads": torch.get_num_threads(),
    }


def _seed_style_step(s: dict[str, Any], args: argparse.Namespace) -> Any:
    import torch
    import torchvision.transforms as T
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    a = s["cfg"].augment
    jitter = T.ColorJitter(
        0.8 * a.jitter_strength, 0.8 * a.jitter_strength, 0.8 * a.jitter_strength, 0.2 * a.jitter_strength
    )
    transform = T.Compose(
        [
            T.RandomResizedCrop(32, scale=tuple(a.crop_scale)),
            T.RandomHorizontalFlip(),
            T.RandomApply([jitter], p=a.jitter_p),
            T.RandomGrayscale(p=a.grayscale_p),
            T.ToTensor(),
            T.Normalize(a.mean, a.std),
        ]
    )
    images = s["splits"].train.images

    class TwoViews(Dataset):
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            img = Image.fromarray(images[i])
            return transform(img), transform(img)

    loader = DataLoader(
        TwoViews(),
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.workers,
        drop_last=True,
        persistent_workers=args.workers > 0,
        pin_memory=s["device"].type == "cuda",
    )
    it = iter(loader)
    model, opt, device, bf16 = s["model"], s["opt"], s["device"], s["bf16"]

    def step() -> Any:
        nonlocal it
        try:
            v1, v2 = next(it)
        except StopIteration:
            it = iter(loader)
            v1, v2 = next(it)
        views = torch.cat([v1, v2]).to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        return _model_step(model, opt, views, device, bf16)

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="preact_resnet26")
    p.add_argument("--batch", type=int, default=256, help="images per step (two views each)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the seed-style pipeline")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--config", default=None)
    p.add_argument("--pipelines", default=",".join(PIPELINES))
    p.add_argument("--only", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only:
        print(json.dumps(run_one(args.only, args)), flush=True)
        return
    argv = [a for a in sys.argv[1:] if not a.startswith("--pipelines")]
    results = []
    for name in args.pipelines.split(","):
        out = subprocess.run(
            [sys.executable, __file__, *argv, "--only", name], capture_output=True, text=True, env=dict(os.environ)
        )
        if out.returncode != 0:
            print(json.dumps({"pipeline": name, "error": out.stderr.strip().splitlines()[-1:]}), flush=True)
            continue
        rec = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(rec)
        print(json.dumps(rec), flush=True)
    bare = next((r["views_per_s"] for r in results if r["pipeline"] == "bare"), None)
    print()
    print("| pipeline | views/s | ratio to bare | peak memory (MB) |")
    print("|---|---:|---:|---:|")
    for r in results:
        ratio = f"{r['views_per_s'] / bare:.2f}" if bare else "-"
        print(f"| {r['pipeline']} | {r['views_per_s']:.0f} | {ratio} | {r['peak_memory_mb']:.0f} |")
    if results:
        r0 = results[0]
        print(
            f"\n{r0['backbone']}, batch {r0['batch']} images ({2 * r0['batch']} views), device {r0['device']}, "
            f"bf16 {r0['bf16']}, {r0['threads']} threads, {r0['steps']} timed steps"
        )


if __name__ == "__main__":
    main()
