"""Sweep results: one row per cell in results.csv, and a table aggregated over seeds."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from ..machine import read_machine, record_machine
from ..rundir import METRICS_JSON, METRICS_JSONL, read_jsonl
from .records import cell_done, cell_state

#: Metric columns of results.csv, in order.
COLUMNS = [
    "final_loss",
    "knn_top1",
    "linear_top1",
    "test_top1",
    "train_time_s",
    "eval_time_s",
    "wall_time_s",
    "views_per_s",
    "peak_memory_mb",
    "embedding_std",
    "after_head_knn_top1",
    "after_head_linear_top1",
    "steps",
]

#: Accuracy columns a table shows only when some cell has them: the projection head's
#: output (``selfsup eval RUN --after-head``, SimCLR's Figure 8), beside the encoder's.
AFTER_HEAD = [
    ("after_head_knn_top1", "kNN after the head (%)"),
    ("after_head_linear_top1", "linear after the head (%)"),
]

#: Text columns of results.csv: the machine that trained a cell (``machine.json``'s label),
#: its precision and the date it finished. Wall times compare only within one machine.
INFO_COLUMNS = ["machine", "precision", "date"]


def write_benchmark(
    folder: str | Path, records: list[dict[str, Any]], table: str, seconds: float, **details: Any
) -> None:
    """Write a benchmark's ``--out`` folder, which a docs ``bench`` block reads.

    Args:
        folder: The folder (created if missing).
        records: One dict per measurement, written to ``results.jsonl``.
        table: The markdown table the benchmark printed, written to ``table.md``.
        seconds: The benchmark's wall time, with the machine and command in ``machine.json``.
        **details: More fields of the ``machine.json`` entry (rounds, ...).
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (out / "table.md").write_text(table + "\n")
    record_machine(out, "benchmark", seconds, **details)


def encoder_dir(sweep_dir: Path, seed: int) -> Path:
    """Where a fine-tuning sweep keeps the encoder it pretrains for ``seed``."""
    return sweep_dir / f"encoder,seed={seed}"


def run_row(run_dir: Path) -> dict[str, Any]:
    """The metrics of one run directory (missing values are absent)."""
    row: dict[str, Any] = {}
    records = read_jsonl(run_dir / METRICS_JSONL)
    summary = next((r for r in reversed(records) if r.get("summary")), None)
    if summary:
        for key in ("final_loss", "train_time_s", "views_per_s", "peak_memory_mb"):
            row[key] = summary.get(key)
        row["steps"] = summary.get("step")
    # The collapse signal at the end of training: the last logged spread of the embeddings.
    spread = next((r["embedding_std"] for r in reversed(records) if "embedding_std" in r), None)
    if spread is not None:
        row["embedding_std"] = spread
    path = run_dir / METRICS_JSON
    if path.is_file():
        metrics = json.loads(path.read_text())
        for key in ("knn_top1", "linear_top1", "test_top1", "eval_time_s"):
            if key in metrics:
                row[key] = metrics[key]
        after = metrics.get("after_head")
        if isinstance(after, dict):  # selfsup eval RUN --after-head
            for key in ("knn_top1", "linear_top1"):
                if key in after:
                    row[f"after_head_{key}"] = after[key]
        if "time_s" in metrics:  # a fine-tuning result
            row["eval_time_s"] = metrics["time_s"]
    row.update(run_provenance(run_dir, summary))
    times = [row.get("train_time_s"), row.get("eval_time_s")]
    if any(t is not None for t in times):
        row["wall_time_s"] = sum(t for t in times if t is not None)
    return row


def run_provenance(run_dir: Path, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """Machine label, precision and finishing date of a run, from machine.json and its summary.

    A run trained on several machines (resumed elsewhere) names them all, joined by ' + '.
    Runs from before machine records were kept have none of these keys.
    """
    entries = read_machine(run_dir)
    out: dict[str, Any] = {}
    trained = [e for e in entries if e.get("what") == "train"] or entries
    labels = list(dict.fromkeys(str(e.get("label")) for e in trained if e.get("label")))
    if labels:
        out["machine"] = " + ".join(labels)
    if entries:
        out["date"] = str(entries[-1].get("date", ""))[:10]
    bf16 = summary.get("bf16") if summary else next((e.get("bf16") for e in reversed(trained) if "bf16" in e), None)
    if bf16 is not None:
        out["precision"] = "bf16" if bf16 else "fp32"
    return out


#: Key of a cell's metrics.json that keeps the figures of the encoder it started from.
ENCODER_RUN = "encoder_run"


def note_encoder(cell_dir: Path, enc_dir: Path) -> None:
    """Keep the encoder's figures (:func:`run_row`) in the cell's own record.

    Called when the cell has just trained from that encoder (a fine-tuning cell that is run
    again is fine-tuned again, from the encoder there is now, so the note is rewritten).

    An encoder's weights are not committed, so another machine pretrains it again (same
    config and seed; the weights match only where the kernels do, e.g. not across
    precisions) and its record is rewritten; the cells fine-tuned from the earlier run must
    keep that run's kNN, linear, loss, cost and machine.
    """
    from ..rundir import update_metrics_json

    update_metrics_json(cell_dir, {ENCODER_RUN: run_row(enc_dir)})


def encoder_row(cell_dir: Path, enc_dir: Path) -> dict[str, Any]:
    """The figures of the encoder a cell started from: its own note, else the encoder's record now."""
    path = cell_dir / METRICS_JSON
    noted = json.loads(path.read_text()).get(ENCODER_RUN) if path.is_file() else None
    return dict(noted) if isinstance(noted, dict) else run_row(enc_dir)


def _from_scratch(run_dir: Path) -> bool:
    """Whether a fine-tuning record trained from random initialisation (no encoder behind it)."""
    return json.loads((run_dir / METRICS_JSON).read_text()).get("init") == "random"


def collect(spec: Any, cells: list[Any], configs: dict[Path, Any] | None = None) -> list[dict[str, Any]]:
    """One row per cell: its axis labels, seed, status and metrics.

    With ``configs`` (cell directory -> the config it should have run), a record whose
    saved config differs counts as missing (see :func:`selfsup.lab.records.cell_state`).
    """
    rows = []
    for cell in cells:
        row: dict[str, Any] = {"cell": cell.dir.name, **cell.labels, "seed": cell.seed}
        if configs is not None:
            done = cell_state(cell.dir, cell.command, configs[cell.dir]).status == "done"
        else:
            done = cell_done(cell.dir, cell.command)
        row["status"] = "done" if done else "missing"
        if done:
            metrics = run_row(cell.dir)
            enc_dir = encoder_dir(cell.dir.parent, cell.seed)
            if cell.command == "finetune" and not _from_scratch(cell.dir):
                # the encoder's pretraining figures, the cell's test accuracy (a cell from
                # scratch has no encoder: its own cost, no kNN or linear columns)
                encoder = encoder_row(cell.dir, enc_dir)
                metrics = {**{k: v for k, v in encoder.items() if k != "eval_time_s"}, **metrics}
                metrics["wall_time_s"] = (encoder.get("train_time_s") or 0) + (metrics.get("eval_time_s") or 0)
            elif configs is not None and configs[cell.dir].model.init == str(enc_dir):
                # started from the sweep's encoder: its cost includes the encoder's pretraining
                encoder = encoder_row(cell.dir, enc_dir)
                metrics["wall_time_s"] = (encoder.get("train_time_s") or 0) + (metrics.get("wall_time_s") or 0)
            row.update(metrics)
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]], axes: list[str]) -> None:
    """results.csv: cell, axes, seed, status, :data:`COLUMNS`, then :data:`INFO_COLUMNS`."""
    fields = ["cell", *axes, "seed", "status", *COLUMNS, *INFO_COLUMNS]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
    tmp.replace(path)


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of results.csv with numbers parsed."""
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            parsed: dict[str, Any] = dict(row)
            for key in [*COLUMNS, "seed"]:
                if row.get(key):
                    parsed[key] = float(row[key]) if key != "seed" else int(row[key])
                else:
                    parsed.pop(key, None)
            for key in INFO_COLUMNS:
                if not row.get(key):
                    parsed.pop(key, None)
            out.append(parsed)
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def aggregate(rows: list[dict[str, Any]], axes: list[str]) -> list[dict[str, Any]]:
    """Group finished rows by their axis labels (first-seen order): n and per-metric value lists."""
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in rows:
        if row.get("status", "done") != "done":
            continue
        key = tuple(str(row[a]) for a in axes)
        g = groups.setdefault(key, {**dict(zip(axes, key, strict=True)), "n": 0, "values": {}})
        g["n"] += 1
        for col in COLUMNS:
            if row.get(col) is not None:
                g["values"].setdefault(col, []).append(float(row[col]))
    return list(groups.values())


def machines(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Finished cells per machine label (cells without a machine record count as 'unrecorded')."""
    out: dict[str, int] = {}
    for row in rows:
        if row.get("status", "done") == "done":
            key = str(row.get("machine") or "unrecorded")
            out[key] = out.get(key, 0) + 1
    return out


def provenance(rows: list[dict[str, Any]]) -> str:
    """One line: the machines and precisions the finished cells ran on, and their dates."""
    done = [r for r in rows if r.get("status", "done") == "done"]
    if not done:
        return ""
    per_machine = "; ".join(f"{m} ({n} cells)" for m, n in machines(done).items())
    precisions = sorted({str(r["precision"]) for r in done if r.get("precision")})
    dates = sorted(str(r["date"]) for r in done if r.get("date"))
    when = (dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}") if dates else "undated"
    return f"Measured {when} on {per_machine}; precision {', '.join(precisions) or 'unrecorded'}."


def markdown_table(
    rows: list[dict[str, Any]],
    axes: list[str],
    command: str = "pretrain",
    reference: dict[str, Any] | None = None,
    compare: str | None = None,
) -> str:
    """Mean ± std over seeds of accuracy (%), final loss and wall time per grid point.

    Wall time is a column only when every finished cell ran on one machine: times from
    different machines do not average (accuracy does, for one precision). The table
    ends with the significance line (:func:`separation`), the seed-noise line
    (:func:`noise`) and the machines line (:func:`provenance`).

    Args:
        rows: One per cell (:func:`collect`), 'missing' ones counted at the end.
        axes: The grid's axis names, the first one the compared one.
        command: Whose accuracy columns to show (see ``table_command``).
        reference: A spec's ``reference`` (``source`` and ``values`` by first-axis
            label, or by first- and second-axis labels, in %): the published table the
            sweep reproduces, as a column beside ours.
        compare: The axis whose values the significance line compares, within each
            combination of the others (a spec's ``compare``; default the first axis).
    """
    metrics = [("knn_top1", "kNN top-1 (%)"), ("linear_top1", "linear top-1 (%)")]
    if command in ("semi", "finetune"):
        metrics = [("test_top1", "test top-1 (%)")] + (metrics if command == "finetune" else [])
    metrics += [(key, name) for key, name in AFTER_HEAD if any(r.get(key) is not None for r in rows)]
    one_machine = len(machines(rows)) <= 1
    head = [*axes, "seeds", *(name for _, name in metrics)]
    ref = reference_points(reference)
    depth = len(next(iter(ref))) if ref else 0
    if not any(tuple(str(r.get(a)) for a in axes[:depth]) in ref for r in rows):  # a scale the reference lacks
        ref = {}
    if ref:
        head.append(f"{reference_title(reference or {})} (%)")
    numbers = _number_columns(rows, one_machine)
    head += [name for name, _, _ in numbers]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for g in aggregate(rows, axes):
        cells = [str(g[a]) for a in axes] + [str(g["n"])]
        for key, _ in metrics:
            vals = g["values"].get(key)
            cells.append(_accuracy_cell([100 * v for v in vals], g["n"]) if vals else "-")
        if ref:
            point = tuple(str(g[a]) for a in axes[:depth])
            cells.append(f"{ref[point]:g}" if point in ref else "-")
        cells += [_number_cell(g["values"].get(key), fmt) for _, key, fmt in numbers]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + _closing_lines(rows, axes, metrics[0][0], compare))


def _number_columns(rows: list[dict[str, Any]], one_machine: bool) -> list[tuple[str, str, str]]:
    """(title, key, format) of the columns after accuracy: loss, and steps, speed, time and spread where they tell."""
    numbers = [("final loss", "final_loss", "{:.3f} ± {:.3f}")]
    if len({r["steps"] for r in rows if r.get("status", "done") == "done" and r.get("steps") is not None}) > 1:
        # Cells that trained different numbers of steps (time budgets, equal-time
        # comparisons): how many, and at what speed where the speeds compare.
        numbers.append(("steps", "steps", "{:.0f} ± {:.0f}"))
        if one_machine:
            numbers.append(("views/s", "views_per_s", "{:.0f} ± {:.0f}"))
    if one_machine:
        numbers.append(("wall time (s)", "wall_time_s", "{:.0f} ± {:.0f}"))
    if any(r.get("embedding_std") is not None for r in rows):  # the collapse signal: near 0 when collapsed
        numbers.append(("embedding std", "embedding_std", "{:.4f} ± {:.4f}"))
    return numbers


def _number_cell(vals: list[float] | None, fmt: str) -> str:
    """Mean ± std of a number over seeds (one value has no spread to show)."""
    if vals and len(vals) == 1:
        return fmt.split(" ± ")[0].format(vals[0])
    return fmt.format(*mean_std(vals)) if vals else "-"


def _closing_lines(rows: list[dict[str, Any]], axes: list[str], metric: str, compare: str | None) -> list[str]:
    """The lines under a table: significance, seed noise, machines, cells not finished."""
    out = []
    note = separation(rows, axes, metric, compare)
    if note:
        out.append(f"\n{note}")
    spread_line = noise(rows, axes, metric)
    if spread_line:
        out.append(f"\n{spread_line}")
    where = provenance(rows)
    if where:
        out.append(f"\n{where}" + ("" if len(machines(rows)) <= 1 else " Wall times are not averaged across machines."))
    missing = sum(1 for r in rows if r.get("status") == "missing")
    if missing:
        out.append(f"\n{missing} cell(s) not finished.")
    return out


def _accuracy_cell(values: list[float], n: int) -> str:
    """Mean ± std of a grid point's values (%), saying how many seeds when not all ``n`` have one.

    A column that only some cells have (accuracy after the head, evaluated on one seed)
    must not print one seed's value as a mean with zero spread.
    """
    if len(values) == 1:  # one value: no spread to show (and say so when others lack it)
        return f"{values[0]:.1f} (1 seed)" if n > 1 else f"{values[0]:.1f}"
    text = "{:.1f} ± {:.1f}".format(*mean_std(values))
    return text if len(values) == n else f"{text} ({len(values)} seeds)"


def milestone_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The milestones evaluated into a run's metrics.json (``selfsup eval RUN --milestones``), oldest first."""
    return sorted((metrics.get("milestones") or {}).values(), key=lambda r: r["step"])


def reference_points(reference: dict[str, Any] | None) -> dict[tuple[str, ...], float]:
    """A spec's reference values (%) keyed by the labels of the first axis, or of the first two.

    ``{64: 66}`` gives ``{("64",): 66.0}``; ``{300: {64: 71.0}}`` gives ``{("300", "64"): 71.0}``.
    """
    points: dict[tuple[str, ...], float] = {}
    for key, value in ((reference or {}).get("values") or {}).items():
        if isinstance(value, dict):
            points.update({(str(key), str(k)): float(v) for k, v in value.items()})
        else:
            points[(str(key),)] = float(value)
    return points


def reference_title(reference: dict[str, Any]) -> str:
    """The column title of a spec's reference values: its ``source``, else 'reference'."""
    return str(reference.get("source") or "reference")


def metric_label(metric: str) -> str:
    """'knn_top1' -> 'kNN top-1', as the table's lines name a metric."""
    return metric.replace("_top1", " top-1").replace("knn", "kNN").replace("_", " ")


def noise(rows: list[dict[str, Any]], axes: list[str], metric: str) -> str:
    """One line: the seed noise of the table, its range over grid points and pooled over them.

    The pooled standard deviation is the root of the mean variance over grid points
    with at least two seeds: the table's typical noise, for choosing a scale. Whether a
    given difference counts is :func:`separation`'s, which pools the two grid points
    compared. '' when no grid point has two seeds.
    """
    stds, seeds = [], []
    for g in aggregate(rows, axes):
        vals = [100 * v for v in g["values"].get(metric, [])]
        if len(vals) >= 2:
            stds.append(mean_std(vals)[1])
            seeds.append(len(vals))
    if not stds:
        return ""
    label = metric_label(metric)
    if len(stds) == 1:
        return f"Seed noise ({label}): std {stds[0]:.1f} points over {seeds[0]} seeds (twice that: {2 * stds[0]:.1f})."
    pooled = math.sqrt(sum(s**2 for s in stds) / len(stds))
    return (
        f"Seed noise ({label}): std {min(stds):.1f} to {max(stds):.1f} points over {len(stds)} grid points, "
        f"pooled {pooled:.1f} (twice that: {2 * pooled:.1f})."
    )


def separation(rows: list[dict[str, Any]], axes: list[str], metric: str, along: str | None = None) -> str:
    """Which values of one axis the best one beats by more than two standard deviations of seed noise.

    With several axes the comparison runs along ``along`` (default: the first axis),
    within each combination of the others (e.g. rows at each label count). The noise of a pair is the pooled
    standard deviation of its two groups over seeds, ``sqrt((s1^2 + s2^2) / 2)``; a
    difference of the means above twice that is called separated. Grid points with one
    seed are left out; '' when nothing can be compared. With three or more grid points
    compared, a second line ranks them and marks which neighbours are separated.
    """
    if not axes:
        return ""
    if along is not None:
        axes = [along, *(a for a in axes if a != along)]
    by_rest: dict[tuple[str, ...], list[tuple[str, float, float]]] = {}
    for g in aggregate(rows, axes):
        vals = [100 * v for v in g["values"].get(metric, [])]
        if len(vals) >= 2:
            by_rest.setdefault(tuple(f"{a}={g[a]}" for a in axes[1:]), []).append((str(g[axes[0]]), *mean_std(vals)))
    label = metric_label(metric)
    notes = []
    for rest, stats in by_rest.items():
        if len(stats) < 2:
            continue
        best = max(stats, key=lambda t: t[1])
        apart: list[str] = []
        within: list[str] = []
        for name, m, s in stats:
            if name != best[0]:
                (apart if _separated(best[1:], (m, s)) else within).append(f"{name} ({m - best[1]:+.1f})")
        where = f" at {', '.join(rest)}" if rest else ""
        text = f"Best {label}{where}: {best[0]}. Below it by more than two pooled seed std: "
        text += ", ".join(apart) or "none"
        notes.append(text + (f"; within two std (not separated): {', '.join(within)}." if within else "."))
        if len(stats) >= 3:  # with two, the line above says it all
            notes.append(
                f"Order of {label}{where}, best first ('>' where neighbours differ by more "
                f"than two pooled seed std, '≈' where not): {_order(stats)}."
            )
    return "\n".join(notes)


def _order(stats: list[tuple[str, float, float]]) -> str:
    """``(name, mean, std)`` ranked best first, neighbours joined by '>' when separated, else '≈'.

    Only neighbours are compared: ``a ≈ b ≈ c`` may still hide an ``a``-``c`` difference
    above two std, which the best-first line above names when ``a`` is the best.
    """
    ranked = sorted(stats, key=lambda t: -t[1])
    text = ranked[0][0]
    for (_, m1, s1), (name, m2, s2) in zip(ranked, ranked[1:]):
        text += (" > " if _separated((m1, s1), (m2, s2)) else " ≈ ") + name
    return text


def _separated(high: tuple[float, float], low: tuple[float, float]) -> bool:
    """Whether ``high``'s mean exceeds ``low``'s by more than twice their pooled std, ``sqrt((s1^2 + s2^2) / 2)``."""
    return high[0] - low[0] > 2 * math.sqrt((high[1] ** 2 + low[1] ** 2) / 2)
