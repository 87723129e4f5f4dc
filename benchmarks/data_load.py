"""Loading a dataset: the first load (decode the JPEGs, write the cache) against a cached one.

Every command loads its data through :func:`selfsup.data.load_dataset`, which decodes a
source once and keeps the uint8 arrays in ``$SELFSUP_CACHE_DIR``. This benchmark times
both paths in fresh processes (so nothing is warm in memory), in turns over several
rounds with an empty cache folder of its own for each cold load, and reports medians.
The target it checks is the one a user feels: a cached load of the bundled CIFAR-10 in
under 2 seconds, and many times faster than decoding.

    python benchmarks/data_load.py                       # bundled CIFAR-10, 3 rounds
    python benchmarks/data_load.py --data path/to/folder --rounds 5 --out bench/data

Prints one JSON line per measurement, then a table; with ``--out``, writes
``results.jsonl``, ``table.md`` and ``machine.json`` (machine, date, command) there too,
from which ``python -m selfsup.lab.docs`` fills a ``bench`` block.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: The cached load of the bundled CIFAR-10 should take less than this (seconds).
TARGET_CACHED_S = 2.0

#: Run in a child process: time one load_dataset call and print it as JSON.
CHILD = """
import json, sys, time
t0 = time.perf_counter()
from selfsup.data import load_dataset
imported = time.perf_counter() - t0
t0 = time.perf_counter()
s = load_dataset(sys.argv[1], progress=False)
seconds = time.perf_counter() - t0
mb = (s.train.images.nbytes + s.test.images.nbytes) / 2**20
print(json.dumps({"seconds": seconds, "import_s": imported, "train": len(s.train), "test": len(s.test), "mb": mb}))
"""


def load_once(data: str, cache: Path) -> dict[str, Any]:
    """Time one load of ``data`` in a fresh process whose cache folder is ``cache``."""
    env = {**os.environ, "SELFSUP_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-c", CHILD, data], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:]}
    record: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="cifar10", help="dataset name or path (default: the bundled CIFAR-10)")
    p.add_argument("--rounds", type=int, default=3, help="cold and cached loads per round, in turns")
    p.add_argument("--out", help="folder for results.jsonl and table.md")
    p.add_argument("--smoke", action="store_true", help="one round (for the tests)")
    args = p.parse_args()
    rounds = 1 if args.smoke else args.rounds
    t_start = time.perf_counter()
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="selfsup-bench-") as tmp:
        warm = Path(tmp) / "warm"
        load_once(args.data, warm)  # fills the cache the cached loads read
        for r in range(rounds):
            for kind in ("decode", "cached"):
                cache = Path(tmp) / f"cold-{r}" if kind == "decode" else warm
                rec = {"kind": kind, "data": args.data, "round": r, **load_once(args.data, cache)}
                records.append(rec)
                print(json.dumps(rec), flush=True)
    ok = {k: [x["seconds"] for x in records if x["kind"] == k and "seconds" in x] for k in ("decode", "cached")}
    lines = ["| load | seconds (median) | min-max |", "|---|---:|---:|"]
    for kind, secs in ok.items():
        if secs:
            lines.append(f"| {kind} | {statistics.median(secs):.2f} | {min(secs):.2f}-{max(secs):.2f} |")
    if ok["decode"] and ok["cached"]:
        cached = statistics.median(ok["cached"])
        lines.append("")
        lines.append(f"decode / cached: {statistics.median(ok['decode']) / cached:.0f}x")
        verdict = "meets" if cached < TARGET_CACHED_S else "misses"
        lines.append(f"cached load {cached:.2f} s {verdict} the {TARGET_CACHED_S:.0f}-second target")
    table = "\n".join(lines)
    print()
    print(table)
    if args.out:
        from selfsup.lab.results import write_benchmark

        write_benchmark(args.out, records, table, time.perf_counter() - t_start, rounds=rounds)
    if any("error" in r for r in records):
        sys.exit(1)


if __name__ == "__main__":
    main()
