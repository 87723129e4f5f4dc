"""Time to accuracy: kNN top-1 against training minutes for selfsup and lightly, in one run.

Three SimCLR pipelines with the same backbone train one after another on the same
machine, each for its own wall-clock budget:

* ``selfsup``: ``selfsup.pretrain`` with a recipe (default ``configs/quick.yaml``) and
  ``train.time_budget`` (every schedule planned to end with the budget), a milestone
  checkpoint every epoch;
* ``lightly``: lightly's documented pipeline (``pipelines.py``: its transform, dataset,
  loader with workers, head, loss, SGD lr 0.06 x batch / 128 with cosine decay over the
  steps that fit the budget, float32);
* ``lightly_tuned``: the same with selfsup's model settings (bf16 autocast where native,
  channels_last).

Snapshots of the encoder are taken about every ``--every`` minutes of training (selfsup:
the first epoch checkpoint past each mark) and evaluated after training, so evaluation
time is outside the training minutes and reported separately: weighted kNN (k=200,
t=0.1) with the full training split as bank and the full test split as queries, the
same code for every pipeline, each encoder with its own normalisation; at the end a
linear probe (selfsup's, Adam on frozen features) as well.

Writes into ``--out``: ``points.jsonl`` (one line per snapshot), ``curves.png`` (kNN
against training minutes), ``table.md`` (minutes to 45, 50, 55, 60 and 64 % kNN, final
kNN and linear top-1), and prints the table.

    python benchmarks/time_to_accuracy.py --out tta                     # 30 + 20 + 20 minutes
    python benchmarks/time_to_accuracy.py --minutes 10 --selfsup-minutes 10 --out tta
    python benchmarks/time_to_accuracy.py --smoke --data FOLDER --out /tmp/tta   # seconds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pipelines import calibrated_step_seconds, cycle, lightly_parts, setup  # noqa: E402
from selfsup.lab.time_to_accuracy import THRESHOLDS, by_pipeline, comparison_minutes, lead, table  # noqa: E402
from selfsup.machine import record_machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def evaluate(encoder: torch.nn.Module, ctx: Any, mean: list[float], std: list[float], linear: bool) -> dict[str, Any]:
    """kNN top-1 (full train bank, full test split), and the linear probe when asked; timed."""
    from selfsup.eval import evaluate_features, extract_features, feature_options, knn_accuracy

    t0 = time.perf_counter()
    opts = {**feature_options(ctx.cfg, ctx.device), "mean": mean, "std": std}
    train = extract_features(encoder, ctx.splits.train.images, **opts)
    test = extract_features(encoder, ctx.splits.test.images, **opts)
    y_train, y_test = torch.from_numpy(ctx.splits.train.labels), torch.from_numpy(ctx.splits.test.labels)
    e, n_classes = ctx.cfg.eval, len(ctx.splits.train.classes)
    if linear:
        out = evaluate_features(train, y_train, test, y_test, n_classes, e, 0)
        out = {"knn_top1": out["knn_top1"], "linear_top1": out["linear_top1"]}
    else:
        out = {"knn_top1": knn_accuracy(train, y_train, test, y_test, n_classes, e.knn_k, e.knn_temperature)}
    return {**out, "eval_s": time.perf_counter() - t0}


def selfsup_points(ctx: Any, args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    """Train with a time budget, then evaluate the epoch checkpoints past each ``--every`` mark.

    The recipe runs as written (its own backbone and batch size; ``--batch`` is lightly's),
    except under ``--smoke``, where the tiny batch applies to it too.
    """
    from selfsup import pretrain
    from selfsup.config import load_config
    from selfsup.eval import load_run_model
    from selfsup.rundir import read_jsonl
    from selfsup.train import resolve_config

    extra: dict[str, Any] = {
        "train.time_budget": args.selfsup_minutes,
        "train.checkpoint_every": 1,
        "train.eval_after": False,
        "train.progress": False,
        "data.name": args.data,
        "train.precision": ctx.cfg.train.precision,
    }
    if args.smoke:
        extra["train.batch_size"] = args.batch
    cfg = resolve_config(load_config(args.config, extra), ctx.splits)  # mean and std from the data
    mean, std = cfg.augment.mean, cfg.augment.std
    assert mean is not None and std is not None, "resolve_config fills augment.mean/std"
    run = out / "selfsup-run"
    pretrain(cfg, out=run, overwrite=True, log=lambda _m: None)
    records = read_jsonl(run / "metrics.jsonl")
    # Epoch ends (milestone checkpoints), or only the end for a run shorter than an epoch.
    ends = [r for r in records if "epoch_loss" in r] or [r for r in records if r.get("summary")]
    # Also the last epoch end within lightly's budget: the point the lead is measured at.
    chosen = _marks([(r["train_time_s"] / 60, r["step"]) for r in ends], args.every, also=args.minutes)
    points = []
    for i, (minutes, step) in enumerate(chosen):
        _, model, _ = load_run_model(run, ctx.device, step=step if i < len(chosen) - 1 else None)
        result = evaluate(model.backbone, ctx, mean, std, linear=i == len(chosen) - 1)
        points.append({"pipeline": "selfsup", "train_min": minutes, "step": step, **result})
    return points


def _marks(times: list[tuple[float, Any]], every: float, also: float | None = None) -> list[tuple[float, Any]]:
    """The first entry past each multiple of ``every`` minutes, and always the last one.

    With ``also``, the last entry at or before ``also`` minutes too (selfsup's encoder at the
    end of lightly's budget, not only at the snapshot before it).
    """
    chosen, mark = [], every
    for minutes, key in times:
        if minutes >= mark:
            chosen.append((minutes, key))
            mark = (math.floor(minutes / every) + 1) * every
    if times and (not chosen or chosen[-1][1] != times[-1][1]):
        chosen.append(times[-1])
    within = [t for t in times if also is not None and t[0] <= also]
    if within and within[-1] not in chosen:
        chosen = sorted([*chosen, within[-1]])
    return chosen


def lightly_points(ctx: Any, args: argparse.Namespace, tuned: bool) -> list[dict[str, Any]]:
    """lightly's loop for ``--minutes``, the backbone copied every ``--every`` minutes, evaluated after."""
    from selfsup.runtime import autocast

    p = lightly_parts(ctx)
    model, criterion, opt, loader = p["model"], p["criterion"], p["opt"], p["loader"]
    if tuned:
        model.to(memory_format=torch.channels_last)
    batch = cycle(loader)
    bf16 = ctx.bf16 and tuned

    def step() -> None:
        (x0, x1), _, _ = batch()
        x0, x1 = x0.to(ctx.device), x1.to(ctx.device)
        if tuned:
            x0, x1 = (x.contiguous(memory_format=torch.channels_last) for x in (x0, x1))
        with autocast(ctx.device, bf16):
            loss = criterion(model(x0).float(), model(x1).float())
        opt.zero_grad()
        loss.backward()
        opt.step()

    # Plan the cosine from a timing of a few steps, on weights restored afterwards.
    step_s = calibrated_step_seconds(step, model, opt, warmup=1 if args.smoke else 3, timed=2 if args.smoke else 8)
    budget = 60 * args.minutes
    total = max(1, math.floor(budget / step_s))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    model.train()
    snapshots: list[tuple[float, int, dict[str, torch.Tensor]]] = []
    train_s, done, mark = 0.0, 0, 60 * args.every
    while done < total and train_s < budget:
        t0 = time.perf_counter()
        step()
        scheduler.step()
        train_s += time.perf_counter() - t0
        done += 1
        if train_s >= mark or done == total or train_s >= budget:
            state = {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}
            snapshots.append((train_s / 60, done, state))
            mark = (math.floor(train_s / (60 * args.every)) + 1) * 60 * args.every
    name = "lightly_tuned" if tuned else "lightly"
    points = []
    for i, (minutes, steps, state) in enumerate(snapshots):
        model.backbone.load_state_dict(state)
        result = evaluate(model.backbone, ctx, p["mean"], p["std"], linear=i == len(snapshots) - 1)
        points.append({"pipeline": name, "train_min": minutes, "step": steps, "epoch": steps / len(loader), **result})
    return points


def plot(by: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, pts in by.items():
        if pts:
            ax.plot([p["train_min"] for p in pts], [100 * p["knn_top1"] for p in pts], "o-", label=name)
    for t in THRESHOLDS:
        ax.axhline(t, color="#ccc", lw=0.8, zorder=0)
    ax.set(
        xlabel="training minutes (evaluation excluded)",
        ylabel="kNN top-1 on the test set (%)",
        title="Time to accuracy, SimCLR, one machine",
    )
    ax.legend()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for points.jsonl, curves.png, table.md")
    p.add_argument("--config", default=str(REPO / "configs" / "quick.yaml"), help="selfsup's recipe")
    p.add_argument("--selfsup-minutes", type=float, default=30.0, help="selfsup's training budget")
    p.add_argument("--minutes", type=float, default=20.0, help="each lightly pipeline's training budget")
    p.add_argument("--every", type=float, default=2.5, help="minutes of training between snapshots")
    p.add_argument("--pipelines", default="selfsup,lightly,lightly_tuned")
    p.add_argument("--batch", type=int, default=256, help="the lightly pipelines' batch (selfsup: its recipe's)")
    p.add_argument("--data", default="cifar10", help="the bundled CIFAR-10, or a folder with train/ and test/")
    p.add_argument("--smoke", action="store_true", help="tiny budgets: checks every code path in seconds")
    args = p.parse_args()
    if args.smoke:
        args.selfsup_minutes, args.minutes, args.every, args.batch = 0.05, 0.05, 0.02, 16
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    ctx = setup("preact_resnet26", args.batch, config=args.config, data=args.data)
    if args.smoke:
        from selfsup.config import apply_overrides

        ctx.cfg = apply_overrides(ctx.cfg, {"eval.linear_epochs": 2})
        ctx.workers = 0
    points: list[dict[str, Any]] = []
    with open(args.out / "points.jsonl", "w") as f:
        for name in args.pipelines.split(","):
            try:
                pts = (
                    selfsup_points(ctx, args, args.out)
                    if name == "selfsup"
                    else lightly_points(ctx, args, tuned=name == "lightly_tuned")
                )
            except ImportError as e:  # lightly is an optional extra
                f.write(json.dumps({"pipeline": name, "skipped": str(e)}) + "\n")
                continue
            points += pts
            for pt in pts:
                f.write(json.dumps(pt) + "\n")
            f.flush()
    by = by_pipeline(points)
    md = table(by)
    env = f"device {ctx.device}, bf16 {ctx.bf16}, {torch.get_num_threads()} threads, batch {args.batch}"
    (args.out / "table.md").write_text(md + "\n\n" + env + "\n")
    plot(by, args.out / "curves.png")
    # The machine and the command, for the docs block generated from this folder.
    record_machine(args.out, "benchmark", time.perf_counter() - t_start, ctx.device, bf16=ctx.bf16, batch=args.batch)
    print(md)
    for other, diff in lead(by, args.minutes).items():
        mark = comparison_minutes(by, args.minutes)
        print(f"selfsup at {mark:g} min minus {other} at the end of its {args.minutes:g} min: {diff:+.1f} kNN points")
    print(env)


if __name__ == "__main__":
    main()
