"""One cell at a time with every core, or several cells at once with a share each?

A sweep's cells can run one after another in one process (``--launcher local``, PyTorch's
threads over all cores) or side by side (``--launcher ray`` with ``--cpus-per-cell``, or
two shells). Which gets more steps out of a small machine depends on how well one step
spreads over the cores, so this measures it, side by side in one run: each round times
one process with ``--threads`` threads, then ``--parallel`` processes at once with an
equal share of the threads each, all on the same pipeline (``pretrain_throughput.py``'s,
``bare`` by default). Rounds alternate the two, and medians are reported.

    python benchmarks/parallel_cells.py                       # 2 threads alone vs 2 x 1
    python benchmarks/parallel_cells.py --pipeline selfsup --rounds 3 --out results/parallel-cells-zen4

The aggregate of a parallel measurement is the sum of its processes' views/s (their timed
windows overlap: each warms up first). Prints one JSON line per measurement, then a
table; with ``--out``, writes ``results.jsonl``, ``table.md`` and ``machine.json`` there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
THROUGHPUT = HERE / "pretrain_throughput.py"


def launch(args: argparse.Namespace, threads: int) -> subprocess.Popen[str]:
    """Start one timing process of ``pretrain_throughput.py`` with ``threads`` threads."""
    cmd = [
        sys.executable,
        str(THROUGHPUT),
        f"--backbone={args.backbone}",
        f"--batch={args.batch}",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
        f"--precision={args.precision}",
        f"--threads={threads}",
        "--only",
        args.pipeline,
    ]
    if args.config:
        cmd.append(f"--config={args.config}")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def collect(procs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Wait for the processes; their JSON records (a one-line error, the others stopped, where one failed)."""
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            for other in procs:
                other.kill()
            raise SystemExit(f"a timing process failed: {stderr.strip().splitlines()[-1:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def measure(args: argparse.Namespace, processes: int) -> dict[str, Any]:
    """One measurement: ``processes`` processes at once sharing ``args.threads`` threads."""
    share = args.threads // processes
    t0 = time.perf_counter()
    recs = collect([launch(args, share) for _ in range(processes)])
    return {
        "layout": f"{processes} x {share} threads",
        "processes": processes,
        "threads_each": share,
        "views_per_s": sum(r["views_per_s"] for r in recs),
        "each_views_per_s": [r["views_per_s"] for r in recs],
        "wall_s": time.perf_counter() - t0,
        "pipeline": args.pipeline,
        "batch": args.batch,
        "steps": args.steps,
        "bf16": recs[0]["bf16"],
        "peak_memory_mb": sum(r["peak_memory_mb"] for r in recs),
    }


def table(records: list[dict[str, Any]]) -> str:
    """Medians per layout, and each layout's ratio to the single process."""
    layouts: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        layouts.setdefault(r["layout"], []).append(r)
    med = {k: statistics.median(r["views_per_s"] for r in rs) for k, rs in layouts.items()}
    single = next(k for k, rs in layouts.items() if rs[0]["processes"] == 1)
    lines = [
        "| layout | views/s, all processes (median) | min-max | ratio to one process | peak memory (MB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for k, rs in layouts.items():
        vs = [r["views_per_s"] for r in rs]
        mem = max(r["peak_memory_mb"] for r in rs)
        lines.append(f"| {k} | {med[k]:.0f} | {min(vs):.0f}-{max(vs):.0f} | {med[k] / med[single]:.2f} | {mem:.0f} |")
    r0 = records[0]
    lines.append("")
    lines.append(
        f"Pipeline `{r0['pipeline']}`, batch {r0['batch']} images, {r0['steps']} timed steps per process, "
        f"bf16 {r0['bf16']}, {len(layouts[single])} rounds."
    )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pipeline", default="bare", help="a pipelines.py pipeline: bare, selfsup, ...")
    p.add_argument("--config", help="recipe (YAML) the pipeline is built from (default: the quick recipe)")
    p.add_argument("--backbone", default="preact_resnet26")
    p.add_argument("--batch", type=int, default=256, help="images per step (two views each)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per process")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads in all (default: cores)")
    p.add_argument("--parallel", type=int, default=2, help="processes side by side")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", help="folder for results.jsonl, table.md and machine.json")
    args = p.parse_args()
    if args.parallel < 2 or args.threads % args.parallel:
        raise SystemExit(f"--parallel must be at least 2 and divide --threads ({args.threads})")
    t_start = time.perf_counter()
    records = []
    for _ in range(args.rounds):
        for processes in (1, args.parallel):
            rec = measure(args, processes)
            records.append(rec)
            print(json.dumps(rec), flush=True)
    text = table(records)
    print()
    print(text)
    if args.out:
        from selfsup.lab.results import write_benchmark

        write_benchmark(args.out, records, text, time.perf_counter() - t_start, rounds=args.rounds)


if __name__ == "__main__":
    main()
