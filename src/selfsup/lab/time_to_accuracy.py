"""Time to accuracy: the table of ``benchmarks/time_to_accuracy.py``, from its points.

The benchmark writes one JSON line per evaluated snapshot (``points.jsonl``: pipeline,
training minutes, step, kNN top-1, the linear probe on the last snapshot). This module
turns those points into the table that the benchmark prints and that ``python -m selfsup.lab.docs``
regenerates from the committed record (block kind ``tta``).
"""

from __future__ import annotations

from typing import Any

#: kNN top-1 (%) thresholds of the table's "minutes to" columns; 64 % is seed 000's linear.
THRESHOLDS = (45, 50, 55, 60, 64)


def minutes_to(points: list[dict[str, Any]], threshold: float) -> float | None:
    """Training minutes of the first snapshot at or above ``threshold`` % kNN (None: never)."""
    return next((p["train_min"] for p in points if 100 * p["knn_top1"] >= threshold), None)


def by_pipeline(points: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Points grouped by pipeline, in the order they first appear; skipped pipelines dropped."""
    by: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        if "skipped" not in p:
            by.setdefault(p["pipeline"], []).append(p)
    return by


def table(by: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: per pipeline the minutes to each threshold, final kNN and linear, evaluation time."""
    head = "| pipeline | " + " | ".join(f"min to {t} %" for t in THRESHOLDS)
    head += " | training (min) | kNN at the end (%) | linear at the end (%) | evaluation (s) |"
    lines = [head, "|---" + "|---:" * (len(THRESHOLDS) + 4) + "|"]
    for name, pts in by.items():
        if not pts:
            continue
        cells = [f"{m:.1f}" if (m := minutes_to(pts, t)) is not None else "-" for t in THRESHOLDS]
        last = pts[-1]
        lin = f"{100 * last['linear_top1']:.1f}" if "linear_top1" in last else "-"
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {last['train_min']:.1f} | {100 * last['knn_top1']:.1f}"
            f" | {lin} | {sum(p['eval_s'] for p in pts):.0f} |"
        )
    return "\n".join(lines)


def comparison_minutes(by: dict[str, list[dict[str, Any]]], minutes: float) -> float:
    """The training minutes at which selfsup is compared: ``minutes``, or its whole run if shorter."""
    return min(minutes, by["selfsup"][-1]["train_min"])


def lead(by: dict[str, list[dict[str, Any]]], minutes: float) -> dict[str, float]:
    """The best selfsup kNN within ``minutes`` (or its whole run if shorter) minus each other pipeline's last.

    Returns:
        Pipeline name -> difference in kNN points (positive: selfsup ahead).
    """
    if not by.get("selfsup"):
        return {}
    mark = comparison_minutes(by, minutes)
    ours = max((p["knn_top1"] for p in by["selfsup"] if p["train_min"] <= mark + 1e-9), default=0.0)
    return {name: 100 * (ours - pts[-1]["knn_top1"]) for name, pts in by.items() if name != "selfsup" and pts}
