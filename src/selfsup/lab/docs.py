"""Docs from data: every measured table in README.md and docs/ is generated from results/.

A markdown file marks a generated block with two comments; what lies between them is
rewritten from the committed records by ``python -m selfsup.lab.docs`` and checked by
``python -m selfsup.lab.docs --check`` (which the test suite runs, so a figure typed by hand, or a
record changed without regenerating the docs, fails)::

    <!-- results table temperature-cpu -->
    ... the sweep's table, its command, dates and machines ...
    <!-- /results -->

Kinds of block (NAME is a folder under ``results/``):

- ``table NAME``: a sweep's table (mean ± std over seeds, the significance line, the
  machines and dates), rebuilt from its cells' records, with the command that made it.
- ``run NAME``: what a single run printed (training and evaluation lines, the
  random-initialisation baseline where it was measured), its command and machine.
- ``milestones NAME``: accuracy of every milestone checkpoint of one run
  (``selfsup eval RUN --milestones``).
- ``checkpoints NAME``: the checkpoints of one run evaluated after it (``selfsup eval RUN
  --step N`` or ``--milestones``) and its own final evaluation, with the training
  minutes at each: accuracy against minutes within one schedule.
- ``runs NAME``: one row per run folder directly under ``results/NAME/`` (recipe trials,
  benchmark runs): kNN, linear, steps, training minutes, machine.
- ``finetunes NAME``: fine-tuning trials (``selfsup finetune RUN --out
  results/NAME/TRIAL,seed=S``), mean ± std over each trial's seeds with its settings.
- ``tta NAME``: the table of a ``benchmarks/time_to_accuracy.py`` run (its
  ``points.jsonl``), with its command and machine.
- ``bench NAME``: the ``table.md`` a benchmark wrote into its ``--out`` folder (e.g.
  ``benchmarks/data_load.py``), with its command and machine from ``machine.json``.
- ``figure NAME`` (or ``figure NAME,METRIC``): a sweep's figure, drawn from its records
  into ``docs/figures/NAME-METRIC.png`` as ``selfsup report`` draws it (accuracy against
  the first axis, a line per value of the others, error bars over seeds; the matrix of a
  spec with ``heatmap:``). The block holds the image link and a digest of the plotted
  numbers, so ``--check`` fails when the records change and the figure was not redrawn
  (or is missing). METRIC defaults to test top-1 where cells have it, else kNN top-1.
- ``figure NAME,milestones``: kNN top-1 of every cell's evaluated milestones against
  training minutes (``docs/figures/NAME-milestones.png``), as ``selfsup report`` draws
  it: the curves of an equal-time comparison.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..machine import read_machine
from ..rundir import METRICS_JSON, METRICS_JSONL, read_jsonl
from .report import render_runs
from .results import collect, markdown_table, mean_std, metric_label, milestone_rows, run_provenance

BLOCK = re.compile(r"(<!-- results (\w+) ([\w.,=+/-]+) -->\n)(.*?)(<!-- /results -->)", re.S)


@dataclass
class Difference:
    """A generated block whose text is not what the records give."""

    file: Path
    kind: str
    name: str

    @property
    def folder(self) -> str:
        """The results folder the block reads (a figure block's name may carry ``,OPTION``)."""
        return block_target(self.kind, self.name)[0]


def block_target(kind: str, name: str) -> tuple[str, str]:
    """A block's results folder and option: only a ``figure`` block's name carries ``,OPTION``."""
    if kind != "figure":
        return name, ""
    folder, _, option = name.partition(",")
    return folder, option


def _sweep_rows(folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every cell of a sweep folder (from its sweep.yaml), read from its record, and the axes.

    Works on a sweep that is still being measured: cells without a finished record are
    'missing' (the table says how many).
    """
    from .sweep import recorded_cells

    found, axes = recorded_cells(folder)
    # The sweep's own collection: a fine-tuning cell gets its encoder's figures (precision,
    # pretraining time) as in the sweep's table.md.
    return collect(None, found), axes


def _spec_in_root(spec: Path, root: Path) -> Path:
    """A sweep's spec path as a reader of ``root`` would type it.

    A sweep run from another checkout (a clean worktree kept for measuring) records that
    checkout's absolute path: the longest tail of it that names a file under ``root``
    (``configs/ablations/heads.yaml``) stands for it, else its file name.
    """
    if not spec.is_absolute():
        return spec
    try:
        return spec.relative_to(root.resolve())
    except ValueError:
        pass
    tails = (Path(*spec.parts[i:]) for i in range(1, len(spec.parts)))
    return next((t for t in tails if (root / t).is_file()), Path(spec.name))


def _sweep_command(folder: Path, root: Path) -> str:
    """``selfsup sweep SPEC --scale S --out FOLDER``, from the folder's sweep.yaml."""
    record = yaml.safe_load((folder / "sweep.yaml").read_text()) or {}
    spec = _spec_in_root(Path(str(record.get("spec", "SPEC.yaml"))), root)
    parts = ["selfsup sweep", spec.as_posix()]
    if record.get("use_scale"):
        parts += ["--scale", str(record["use_scale"])]
    parts += ["--out", folder.relative_to(root).as_posix()]
    return " ".join(parts)


def render_table(folder: Path, root: Path) -> str:
    """The ``table`` block of a sweep folder."""
    from .sweep import table_command

    rows, axes = _sweep_rows(folder)
    record = yaml.safe_load((folder / "sweep.yaml").read_text()) or {}
    table = markdown_table(rows, axes, table_command(record), record.get("reference"), record.get("compare"))
    return f"`{_sweep_command(folder, root)}`\n\n{table}\n"


def _command(entries: list[dict[str, Any]], what: tuple[str, ...]) -> str | None:
    """The command of the first entry of a kind in ``what``, as typed (a script run with ``python``)."""
    cmd = next((e["command"] for e in entries if e.get("what") in what and e.get("command")), None)
    if cmd and cmd.split()[0].endswith(".py"):  # the record keeps argv: `benchmarks/x.py ...`
        cmd = f"python {cmd}"
    return cmd


def _measured(where: dict[str, Any], start: bool = False) -> str:
    """'measured DATE on MACHINE (precision).' from :func:`run_provenance`'s fields.

    Args:
        where: The provenance fields (date, machine, precision).
        start: Whether the phrase starts a sentence ('Measured ...').
    """
    verb = "Measured" if start else "measured"
    out = f"{verb} {where.get('date', 'undated')} on {where.get('machine', 'an unrecorded machine')}"
    return out + (f" ({where['precision']})." if "precision" in where else ".")


def render_run(folder: Path, root: Path) -> str:
    """The ``run`` block: the lines a run printed, as a console transcript, and its machine."""
    from ..eval import result_line
    from ..pretraining import training_line

    entries = read_machine(folder)
    records = read_jsonl(folder / METRICS_JSONL)
    summary = next((r for r in reversed(records) if r.get("summary")), None)
    metrics = json.loads((folder / METRICS_JSON).read_text()) if (folder / METRICS_JSON).is_file() else {}
    lines = []
    train_cmd = _command(entries, ("train",))
    if train_cmd:
        lines.append(f"$ {train_cmd}")
    if summary:
        lines.append(training_line(summary))
    if "knn_top1" in metrics:
        lines.append(result_line("encoder", metrics))
    if "random_init" in metrics:
        baseline_cmd = _command(entries, ("eval-random-init",))
        if baseline_cmd:
            lines.append(f"$ {baseline_cmd}")
        lines.append(result_line("random init", metrics["random_init"]))
    return "```\n" + "\n".join(lines) + "\n```\n\n" + _measured(run_provenance(folder, summary), start=True) + "\n"


def render_milestones(folder: Path, root: Path) -> str:
    """The ``milestones`` block: epoch, step, kNN and linear top-1 of every evaluated milestone."""
    metrics = json.loads((folder / METRICS_JSON).read_text())
    rows = milestone_rows(metrics)
    if not rows:
        raise ConfigError(f"{folder}: no milestones evaluated (selfsup eval {folder} --milestones)")
    accs = [k for k in rows[0] if k.endswith("top1")]
    names = [k.replace("knn", "kNN").replace("_top1", " top-1 (%)").replace("_", " ") for k in accs]
    out = ["| epoch | step | " + " | ".join(names) + " |", "|---:|---:|" + "---:|" * len(accs)]
    out += [f"| {r['epoch']} | {r['step']} | " + " | ".join(f"{100 * r[k]:.1f}" for k in accs) + " |" for r in rows]
    return "\n".join(out) + "\n\n" + _measured(run_provenance(folder), start=True) + "\n"


def render_checkpoints(folder: Path, root: Path) -> str:
    """The ``checkpoints`` block: step, training minutes, kNN and linear top-1 of every evaluated checkpoint."""
    metrics = json.loads((folder / METRICS_JSON).read_text()) if (folder / METRICS_JSON).is_file() else {}
    rows = {int(r.get("checkpoint_step", r.get("step"))): r for r in (metrics.get("steps") or {}).values()}
    rows.update({int(r["step"]): r for r in milestone_rows(metrics)})
    if "knn_top1" in metrics and "checkpoint_step" in metrics:
        rows[int(metrics["checkpoint_step"])] = metrics
    if not rows:
        raise ConfigError(f"{folder}: no checkpoint evaluated (selfsup eval {folder} --step N)")
    minutes = {r["step"]: r["train_time_s"] / 60 for r in read_jsonl(folder / METRICS_JSONL) if "train_time_s" in r}
    out = ["| step | training (min) | kNN top-1 (%) | linear top-1 (%) |", "|---:|---:|---:|---:|"]
    for step in sorted(rows):
        r, when = rows[step], minutes.get(step)
        at = f"{when:.1f}" if when is not None else "-"
        out.append(f"| {step} | {at} | {100 * r['knn_top1']:.1f} | {100 * r['linear_top1']:.1f} |")
    return "\n".join(out) + "\n\n" + _measured(run_provenance(folder), start=True) + "\n"


_SEED_SUFFIX = re.compile(r",seed=\d+$")


def render_finetunes(folder: Path, root: Path) -> str:
    """The ``finetunes`` block: fine-tunings written into ``results/NAME/TRIAL,seed=S``.

    Each folder holds what ``selfsup finetune RUN --out FOLDER`` wrote; folders that
    differ only in their ``,seed=S`` suffix are one trial, shown as mean ± std over its
    seeds with the settings it ran with (recorded with each result), one row per trial and
    label count, then the machines and one command per trial.
    """
    groups: dict[tuple[str, str, str], list[tuple[dict[str, Any], Path]]] = {}
    for run in sorted(p for p in folder.iterdir() if (p / METRICS_JSON).is_file()):
        metrics = json.loads((run / METRICS_JSON).read_text())
        for section, init in (("finetune", "pretrained"), ("finetune_random_init", "random")):
            for labels, result in (metrics.get(section) or {}).items():
                groups.setdefault((_SEED_SUFFIX.sub("", run.name), labels, init), []).append((result, run))
    if not groups:
        raise ConfigError(f"{folder}: no fine-tuning results (selfsup finetune RUN --out {folder}/TRIAL)")
    out = [
        "| trial | labels | init | seeds | epochs | lr | encoder lr | head epochs | frozen | best epoch "
        "| test top-1 (%) | fine-tuning (s) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    where: dict[str, None] = {}
    commands: dict[str, str] = {}
    for (trial, labels, init), entries in sorted(groups.items(), key=lambda kv: (int(kv[0][1]), kv[0][0], kv[0][2])):
        results = [r for r, _ in entries]
        ft = results[0].get("settings") or {}

        def setting(key: str, ft: dict[str, Any] = ft) -> str:
            return f"{ft[key]:g}" if isinstance(ft.get(key), (int, float)) else "-"

        top1 = mean_std([100 * r["test_top1"] for r in results])
        accuracy = f"{top1[0]:.1f} ± {top1[1]:.1f}" if len(results) > 1 else f"{top1[0]:.1f}"
        seconds = mean_std([r["time_s"] for r in results])
        best = "/".join(str(r.get("best_epoch", "-")) for r in results)
        out.append(
            f"| {trial} | {labels} | {init} | {len(results)} | {results[0].get('epochs', '-')} | {setting('lr')} "
            f"| {setting('encoder_lr')} | {setting('head_epochs')} | {'yes' if ft.get('freeze_encoder') else 'no'} "
            f"| {best} | {accuracy} | {seconds[0]:.0f} |"
        )
        for _, run in entries:
            where[_measured(run_provenance(run), start=True)] = None
            cmd = _command(read_machine(run), ("finetune", "finetune_random_init"))
            if cmd and trial not in commands:
                commands[trial] = cmd
    out.append("\n" + " ".join(where))
    if commands:
        out.append("\n" + "\n".join(f"- {trial}: `{cmd}`" for trial, cmd in commands.items()))
    return "\n".join(out) + "\n"


def render_tta(folder: Path, root: Path) -> str:
    """The ``tta`` block: minutes to each kNN threshold per pipeline, the command and machine."""
    from .time_to_accuracy import by_pipeline, table

    points = read_jsonl(folder / "points.jsonl")
    entries = read_machine(folder)
    cmd = _command(entries, ("benchmark",))
    out = table(by_pipeline(points)) + "\n\n"
    if cmd:
        out += f"`{cmd}`; "
    return out + _measured(run_provenance(folder)) + "\n"


def render_bench(folder: Path, root: Path) -> str:
    """The ``bench`` block: a benchmark's ``table.md`` as it wrote it, its command and machine.

    For the benchmarks under ``benchmarks/`` that write ``table.md`` and ``machine.json``
    (an entry ``what: benchmark``) into their ``--out`` folder.
    """
    if not (folder / "table.md").is_file():
        raise ConfigError(f"{folder}: no table.md (run the benchmark with --out {folder})")
    entries = read_machine(folder)
    cmd = _command(entries, ("benchmark",))
    if not cmd:
        raise ConfigError(f"{folder}: no benchmark entry in machine.json (run the benchmark with --out {folder})")
    table = (folder / "table.md").read_text().strip()
    return f"{table}\n\n`{cmd}`; " + _measured(run_provenance(folder)) + "\n"


def _figure_metric(groups: list[dict[str, Any]], asked: str | None, folder: Path) -> str:
    have = {m for g in groups for m, v in g["values"].items() if v}
    if asked:
        if asked not in have:
            raise ConfigError(f"{folder}: no finished cell has {asked!r} (have: {', '.join(sorted(have)) or 'none'})")
        return asked
    return "test_top1" if "test_top1" in have else "knn_top1"


def render_figure(folder: Path, root: Path, where: Path, option: str | None, old: str, check: bool) -> str:
    """The ``figure`` block: draw the sweep's figure under docs/figures/ (unless ``check``) and link it.

    ``option`` is a metric (the accuracy figure of ``selfsup report``, or the matrix of a
    spec with ``heatmap:``) or ``milestones``: kNN of every cell's evaluated milestones
    against training minutes (budget minutes where the cells stretched their budget alike).
    The PNG is redrawn only when the plotted numbers changed (their digest is in the block)
    or the file is missing, so regenerating the docs does not rewrite unchanged images.
    """
    from .report import accuracy_plot, heatmap, milestone_curve, milestone_plot
    from .results import aggregate

    rows, axes = _sweep_rows(folder)
    record = yaml.safe_load((folder / "sweep.yaml").read_text()) or {}
    groups = aggregate(rows, axes)
    if not groups:
        raise ConfigError(f"{folder}: no finished cell to plot")
    heat = record.get("heatmap")
    x = record.get("x_axis") or axes[0]
    others = [a for a in axes if a != x]
    draw: Callable[[Path], str | None]
    if option == "milestones":
        suffix, what = "milestones", "kNN top-1 of each milestone against training time, a line per cell"
        done = [r for r in rows if r.get("status") == "done"]
        data: list[Any] = [[r["cell"], milestone_curve(folder / r["cell"])] for r in done]
        data = [[cell, [[s, round(v, 6), t if t is None else round(t, 4)] for s, v, t in c]] for cell, c in data]
        draw = partial(milestone_plot, folder, rows, axes)
    else:
        metric = suffix = _figure_metric(groups, option, folder)
        data = [[[str(g[a]) for a in axes], [round(v, 6) for v in g["values"].get(metric, [])]] for g in groups]
        lines = f"a line per {', '.join(others)}" if others else "one line"
        shown = "one operation (diagonal) or two" if heat else f"against {x}, {lines}"
        what = f"{metric_label(metric)}: {shown}"
        if heat:
            draw = partial(heatmap, groups, heat, metric)
        else:
            draw = partial(accuracy_plot, groups, [x, *others], metric, reference=record.get("reference"))
    digest = hashlib.sha256(json.dumps(sorted(data)).encode()).hexdigest()[:12]
    image = root / "docs" / "figures" / f"{folder.name}-{suffix}.png"
    link = Path(os.path.relpath(image.resolve(), where.parent.resolve()))
    done_cells = sum(g["n"] for g in groups)
    text = (
        f"![{what}]({link.as_posix()})\n\n"
        f"Drawn by `python -m selfsup.lab.docs` from results/{folder.name} ({done_cells} finished cells; "
        f"plotted numbers {digest}).\n"
    )
    if check:
        return text if image.is_file() else text + "(image missing: run python -m selfsup.lab.docs)\n"
    if text != old or not image.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            name = draw(Path(tmp))
            if name is None:
                raise ConfigError(f"{folder}: nothing to draw for {suffix}")
            image.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(Path(tmp) / name), image)
    return text


RENDERERS = {
    "table": render_table,
    "run": render_run,
    "milestones": render_milestones,
    "checkpoints": render_checkpoints,
    "runs": render_runs,
    "finetunes": render_finetunes,
    "tta": render_tta,
    "bench": render_bench,
}


def _render(kind: str, name: str, results: Path, root: Path, where: Path, old: str, check: bool) -> str:
    if kind not in (*RENDERERS, "figure"):
        raise ConfigError(f"{where}: unknown results block kind {kind!r} (known: {', '.join(RENDERERS)}, figure)")
    name, option = block_target(kind, name)
    folder = results / name
    if not folder.is_dir():
        raise ConfigError(f"{where}: results block names {folder}, which does not exist")
    if kind == "figure":
        return render_figure(folder, root, where, option or None, old, check)
    return RENDERERS[kind](folder, root)


def doc_files(root: Path) -> list[Path]:
    """README.md and every markdown file under docs/."""
    return [p for p in [root / "README.md", *sorted((root / "docs").rglob("*.md"))] if p.is_file()]


def update_docs(root: str | Path = ".", check: bool = False) -> list[Difference]:
    """Regenerate (or, with ``check``, compare) every results block of the docs.

    Args:
        root: The repository root (README.md, docs/, results/).
        check: Change nothing; only report the blocks that differ.

    Returns:
        The blocks whose text differed from what the records give (rewritten unless ``check``).

    Raises:
        ConfigError: For a block of unknown kind or one naming a missing results folder,
            or a root with neither README.md nor docs/ (nothing would be checked).
    """
    root = Path(root)
    results = root / "results"
    differences = []
    files = doc_files(root)
    if not files:
        raise ConfigError(f"no README.md or docs/*.md under {root}: run it in the repository root or pass --root")
    for path in files:
        text = path.read_text()
        found: list[Difference] = []

        def replace(m: re.Match[str], path: Path = path, found: list[Difference] = found) -> str:
            fresh = _render(m.group(2), m.group(3), results, root, path, m.group(4), check)
            if fresh != m.group(4):
                found.append(Difference(path, m.group(2), m.group(3)))
            return m.group(1) + fresh + m.group(5)

        new = BLOCK.sub(replace, text)
        differences += found
        if found and not check:
            path.write_text(new)
    return differences


def main(argv: list[str] | None = None) -> int:
    """``python -m selfsup.lab.docs [--check] [--root DIR]``: the development tool that keeps the docs' blocks."""
    import argparse
    import sys

    from ..errors import SelfsupError

    parser = argparse.ArgumentParser(
        prog="python -m selfsup.lab.docs",
        description="Rewrite every '<!-- results KIND NAME -->' block of README.md and docs/*.md from the "
        "committed records under results/; with --check, change nothing and exit 1 if a block differs.",
    )
    parser.add_argument("--root", default=".", metavar="DIR", help="the repository root (default: here)")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when a block differs")
    args = parser.parse_args(argv)
    try:
        differences = update_docs(args.root, check=args.check)
    except SelfsupError as e:
        print(f"python -m selfsup.lab.docs: error: {e}", file=sys.stderr)
        return 2
    for d in differences:
        verb = "differs from" if args.check else "regenerated from"
        print(f"{d.file}: block '{d.kind} {d.name}' {verb} results/{d.folder}")
    if args.check and differences:
        print(f"{len(differences)} block(s) out of date; run 'python -m selfsup.lab.docs' and commit", file=sys.stderr)
        return 1
    if args.check:
        print("every results block matches its records")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
