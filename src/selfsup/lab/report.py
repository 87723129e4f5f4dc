"""HTML reports of a run or a sweep: ``selfsup report DIR``.

Writes ``DIR/report.html`` (no external resources) and the PNGs it shows in
``DIR/report/``.

* A run: its metrics, loss, learning-rate and kNN-monitor curves, accuracy of its
  evaluated milestones against epochs, a t-SNE map of test
  features coloured by class, a grid of nearest-neighbour retrievals, its config.
* A sweep: the results table (mean ± std over seeds), accuracy against the swept value
  with error bars, kNN of every cell's evaluated milestones against training minutes
  (``selfsup eval CELL --milestones``), loss curves of every cell, wall time per grid
  point, every cell's row.
* A folder of runs (each subfolder a run directory, e.g. one trial per change): the
  ``runs`` docs table, and per method one figure of every logged signal against steps,
  one line per run, so that trials of one method can be compared at a glance.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MissingExtraError, RunDirError
from ..rundir import CONFIG, METRICS_JSON, METRICS_JSONL, load_run_config, read_jsonl, write_atomic
from .results import (
    COLUMNS,
    aggregate,
    machines,
    mean_std,
    metric_label,
    milestone_rows,
    read_csv,
    reference_points,
    reference_title,
    run_row,
)
from .sweep import SPEC_FILE, record_seeds, table_command

FIGURES = "report"
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.muted { color: #777; }
"""


def lab_module(name: str) -> Any:
    """Import ``name``, a package of the ``lab`` extra; one clear error where it is missing."""
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        top = name.partition(".")[0]
        raise MissingExtraError(
            f"reports need {top}, which is not installed: pip install 'selfsup[lab]' (or pip install -e '.[lab]')"
        ) from None


def _plt() -> Any:
    matplotlib = lab_module("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _table(head: list[str], rows: list[list[Any]]) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    return "\n".join(out) + "</table>"


def _page(title: str, body: list[str]) -> str:
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _img(name: str, alt: str) -> str:
    return f"<img src='{FIGURES}/{html.escape(name)}' alt='{html.escape(alt)}'>"


def _save(fig: Any, folder: Path, name: str) -> str:
    folder.mkdir(exist_ok=True)
    fig.savefig(folder / name, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return name


def _curves(records: list[dict[str, Any]], folder: Path, prefix: str = "") -> list[str]:
    """Loss, learning-rate and kNN-monitor curves of one run; the figure names written."""
    plt = _plt()
    steps = [r for r in records if "loss" in r and "step" in r]
    epochs = [r for r in records if "epoch_loss" in r]
    names = []
    if steps:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        ax.plot([r["epoch"] for r in steps], [r["loss"] for r in steps], lw=1, label="per log interval")
        if epochs:
            ax.plot([r["epoch"] for r in epochs], [r["epoch_loss"] for r in epochs], "o-", label="epoch mean")
        ax.set(xlabel="epoch", ylabel="training loss", title="Training loss")
        ax.legend()
        names.append(_save(fig, folder, f"{prefix}loss.png"))
        fig, ax = plt.subplots(figsize=(6.4, 3.0))
        ax.plot([r["epoch"] for r in steps], [r["lr"] for r in steps], color="C2")
        ax.set(xlabel="epoch", ylabel="learning rate", title="Learning-rate schedule")
        names.append(_save(fig, folder, f"{prefix}lr.png"))
    knn = [r for r in epochs if "knn_top1" in r]
    if knn:
        fig, ax = plt.subplots(figsize=(6.4, 3.0))
        ax.plot([r["epoch"] for r in knn], [100 * r["knn_top1"] for r in knn], "o-", color="C3")
        ax.set(xlabel="epoch", ylabel="kNN top-1 (%)", title="kNN monitor (subsets)")
        names.append(_save(fig, folder, f"{prefix}knn.png"))
    signals = _signals(steps, folder, prefix)
    return names + ([signals] if signals else [])


#: Interval-record keys that are not a method's own scalars.
_BOOKKEEPING = {"step", "epoch", "loss", "lr", "views_per_s", "train_time_s"}


def _signals(steps: list[dict[str, Any]], folder: Path, prefix: str) -> str | None:
    """Every other scalar a method logged (health signals: embedding std, contrastive top-1, parts of the loss)."""
    keys = sorted({k for r in steps for k, v in r.items() if k not in _BOOKKEEPING and isinstance(v, (int, float))})
    if not keys:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(keys), 1, figsize=(6.4, 2.2 * len(keys)), squeeze=False, sharex=True)
    for ax, key in zip(axes[:, 0], keys):
        rows = [r for r in steps if key in r]
        ax.plot([r["epoch"] for r in rows], [r[key] for r in rows], lw=1)
        ax.set_ylabel(key.replace("_", " "), fontsize=8)
    axes[-1, 0].set_xlabel("epoch")
    axes[0, 0].set_title("What the method logged (embedding std near 0 means collapse)")
    return _save(fig, folder, f"{prefix}signals.png")


def _flat_metrics(metrics: dict[str, Any], prefix: str = "") -> list[list[Any]]:
    rows = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            rows += _flat_metrics(value, f"{prefix}{key}.")
        elif isinstance(value, float):
            rows.append([prefix + key, f"{value:.4f}"])
        else:
            rows.append([prefix + key, value])
    return rows


def _features(run_dir: Path, samples: int) -> dict[str, Any] | None:
    """Test and train-bank features of a run's encoder, with images and labels."""
    import torch

    from ..data import class_balanced_indices, load_data
    from ..eval import extract_features, feature_options, load_run_model
    from ..runtime import resolve_device

    if not (run_dir / "checkpoints").is_dir():
        return None
    cfg, model, _ = load_run_model(run_dir, "cpu")
    dev = resolve_device(cfg.train.device)
    model.to(dev)
    d = cfg.data
    splits = load_data(d, progress=False, subset=False)
    test_idx = class_balanced_indices(splits.test.labels, min(samples, len(splits.test)), 0)
    bank_idx = class_balanced_indices(splits.train.labels, min(10000, len(splits.train)), 0)
    kw = feature_options(cfg, dev)
    encoder = model.backbone
    assert isinstance(encoder, torch.nn.Module)
    return {
        "test": extract_features(encoder, splits.test.images[test_idx], **kw).cpu().numpy(),
        "test_images": splits.test.images[test_idx],
        "test_labels": splits.test.labels[test_idx],
        "bank": extract_features(encoder, splits.train.images[bank_idx], **kw).cpu().numpy(),
        "bank_images": splits.train.images[bank_idx],
        "bank_labels": splits.train.labels[bank_idx],
        "classes": splits.train.classes,
    }


def _embedding(f: dict[str, Any], folder: Path) -> str:
    TSNE = lab_module("sklearn.manifold").TSNE  # noqa: N806 (the class)
    plt = _plt()
    x = f["test"] / np.linalg.norm(f["test"], axis=1, keepdims=True).clip(1e-8)
    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    xy = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=0).fit_transform(x)
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab10" if len(f["classes"]) <= 10 else "tab20")
    for c, name in enumerate(f["classes"]):
        m = f["test_labels"] == c
        ax.scatter(xy[m, 0], xy[m, 1], s=5, color=cmap(c % cmap.N), label=name)
    ax.set(title=f"t-SNE of {len(x)} test features, coloured by class", xticks=[], yticks=[])
    ax.legend(markerscale=3, fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    return _save(fig, folder, "embedding.png")


def _neighbours(f: dict[str, Any], folder: Path, queries: int = 8, k: int = 8) -> str:
    plt = _plt()
    bank = f["bank"] / np.linalg.norm(f["bank"], axis=1, keepdims=True).clip(1e-8)
    labels = f["test_labels"]
    picks = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)][:queries]
    fig, axes = plt.subplots(len(picks), k + 1, figsize=(1.1 * (k + 1), 1.15 * len(picks)))
    axes = np.atleast_2d(axes)
    for row, q in enumerate(picks):
        v = f["test"][q] / max(np.linalg.norm(f["test"][q]), 1e-8)
        nearest = np.argsort(-(bank @ v))[:k]
        cells = [(f["test_images"][q], None)] + [
            (f["bank_images"][j], f["bank_labels"][j] == labels[q]) for j in nearest
        ]
        for col, (image, same) in enumerate(cells):
            ax = axes[row, col]
            ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
            colour = "black" if same is None else ("tab:green" if same else "tab:red")
            for spine in ax.spines.values():
                spine.set_color(colour)
                spine.set_linewidth(2.5)
        axes[row, 0].set_ylabel(f["classes"][labels[q]], fontsize=7)
    axes[0, 0].set_title("query", fontsize=8)
    fig.suptitle(f"{k} nearest training images (green: same class, red: other)", fontsize=9)
    return _save(fig, folder, "neighbours.png")


def _augmentation(config: dict[str, Any], folder: Path) -> str | None:
    """The run's own augmentation on 8 of its images (None if its data is gone)."""
    from ..config import config_from_dict
    from ..errors import DataError
    from ..preview import preview

    cfg = config_from_dict(config, "config.yaml")
    try:
        preview(n=8, views=4, out=folder / "augmentation.png", data=cfg.data, augment=cfg.augment)
    except DataError:
        return None
    return "augmentation.png"


def _run_milestones(metrics: dict[str, Any], folder: Path) -> str | None:
    """Accuracy of a run's evaluated milestones against epochs (``selfsup eval RUN --milestones``)."""
    rows = milestone_rows(metrics)
    if len(rows) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for key in (k for k in rows[0] if k.endswith("top1")):
        ax.plot([r["epoch"] for r in rows], [100 * r[key] for r in rows], "o-", label=metric_label(key))
    ax.set(xlabel="epoch", ylabel="top-1 (%)", title="Accuracy of each milestone checkpoint")
    ax.legend(fontsize=8)
    return _save(fig, folder, "milestones.png")


def report_run(run_dir: Path, samples: int = 2000, embedding: bool = True) -> Path:
    """Write ``run_dir/report.html`` (see the module docstring)."""
    import yaml

    folder = run_dir / FIGURES
    records = read_jsonl(run_dir / METRICS_JSONL)
    metrics = json.loads((run_dir / METRICS_JSON).read_text()) if (run_dir / METRICS_JSON).is_file() else {}
    config = yaml.safe_load((run_dir / CONFIG).read_text())
    body = [
        f"<p class='muted'>{html.escape(str(run_dir))}: {html.escape(config['method']['name'])}, "
        f"{html.escape(config['model']['backbone'])}, data {html.escape(str(config['data']['name']))}, "
        f"{config['train']['epochs']} epochs, batch {config['train']['batch_size']}</p>"
    ]
    if metrics:
        body += ["<h2>Results</h2>", _table(["metric", "value"], _flat_metrics(metrics))]
    summary = next((r for r in reversed(records) if r.get("summary")), None)
    if summary:
        body += [
            _table(
                ["training", "value"],
                [[k, f"{v:.4g}" if isinstance(v, float) else v] for k, v in summary.items() if k != "summary"],
            )
        ]
    curves = _curves(records, folder)
    if curves:
        body += ["<h2>Training curves</h2>"] + [_img(n, n) for n in curves]
    stones = _run_milestones(metrics, folder)
    if stones:
        body += ["<h2>Milestones</h2>", _img(stones, "accuracy of each milestone")]
    views = _augmentation(config, folder)
    if views:
        body += ["<h2>Augmentation</h2>", _img(views, "images and augmented views")]
    if embedding:
        feats = _features(run_dir, samples)
        if feats is not None:
            body += [
                "<h2>Test features</h2>",
                _img(_embedding(feats, folder), "t-SNE"),
                "<h2>Nearest neighbours</h2>",
                _img(_neighbours(feats, folder), "retrievals"),
            ]
    body += ["<h2>Config</h2>", f"<pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>"]
    out = run_dir / "report.html"
    write_atomic(out, _page(f"selfsup run: {run_dir.name}", body).encode())
    return out


def _numeric(labels: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in labels]
    except ValueError:
        return None


def accuracy_plot(
    groups: list[dict[str, Any]],
    axes: list[str],
    metric: str,
    folder: Path,
    reference: dict[str, Any] | None = None,
) -> str | None:
    """The metric against the first axis (one line per value of the others), with the paper's points.

    Returns:
        The figure's file name in ``folder``, or None when no cell has the metric.
    """
    plt = _plt()
    first, rest = axes[0], axes[1:]
    series: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for g in groups:
        if g["values"].get(metric):
            series.setdefault(tuple(g[a] for a in rest), []).append(g)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    all_labels = list(dict.fromkeys(g[first] for g in groups))
    xs_num = _numeric(all_labels)
    colours: dict[str, str] = {}  # by the second axis's label: a reference line takes its series' colour
    for key, gs in series.items():
        stats = [mean_std([100 * v for v in g["values"][metric]]) for g in gs]
        xs = [float(g[first]) for g in gs] if xs_num else [all_labels.index(g[first]) for g in gs]
        label = ", ".join(f"{a}={v}" for a, v in zip(rest, key, strict=True)) or ("selfsup" if reference else None)
        bars = ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=4, label=label)
        if key:
            colours[str(key[0])] = bars.lines[0].get_color()
    ref = reference if reference and reference.get("metric") == metric else None
    if ref:  # the published table beside ours: same axis, so the gap in level shows too
        lines: dict[str | None, list[tuple[str, float]]] = {}  # one line, or one per second-axis label
        for point, v in reference_points(ref).items():
            lines.setdefault(point[1] if len(point) > 1 else None, []).append((point[0], v))
        if xs_num:
            xs_num = sorted(set(xs_num) | {float(k) for pts in lines.values() for k, _ in pts})
            all_labels = [f"{x:g}" for x in xs_num]
        for second, pts in lines.items():
            if xs_num:
                extra = sorted((float(k), v) for k, v in pts)
            else:
                extra = sorted((all_labels.index(k), v) for k, v in pts if k in all_labels)
            title = reference_title(ref) if second is None else f"{reference_title(ref)}, {rest[0]}={second}"
            colour = colours.get(second, "grey") if second is not None else "grey"
            ax.plot([x for x, _ in extra], [v for _, v in extra], "s--", color=colour, alpha=0.7, label=title)
    if xs_num:
        if min(xs_num) > 0 and max(xs_num) / min(xs_num) >= 10:  # a decade or more: equal ratios, equal steps
            ax.set_xscale("log")
        ax.set_xticks(xs_num, all_labels)
        ax.minorticks_off()  # a log axis would label its minor ticks too (3x10^2 over 250)
    else:
        ax.set_xticks(range(len(all_labels)), all_labels, rotation=20)
    name = metric_label(metric)
    ax.set(xlabel=first, ylabel=f"{name} (%)", title=f"{name} against {first} (mean ± std over seeds)")
    if rest or ref:
        ax.legend(fontsize=8)
    return _save(fig, folder, f"accuracy_{metric}.png")


def _sweep_loss_plot(sweep_dir: Path, rows: list[dict[str, Any]], axes: list[str], folder: Path) -> str | None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    labels = list(dict.fromkeys(str(r[axes[0]]) for r in rows))
    cmap = plt.get_cmap("viridis")
    drawn = set()
    for row in rows:
        records = [r for r in read_jsonl(sweep_dir / row["cell"] / METRICS_JSONL) if "epoch_loss" in r]
        if not records:
            continue
        i = labels.index(str(row[axes[0]]))
        colour = cmap(i / max(len(labels) - 1, 1))
        label = f"{axes[0]}={row[axes[0]]}" if i not in drawn else None
        drawn.add(i)
        ax.plot(
            [r["epoch"] for r in records],
            [r["epoch_loss"] for r in records],
            "-",
            color=colour,
            lw=1.2,
            label=label,
            alpha=0.85,
        )
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xlabel="epoch", ylabel="training loss (epoch mean)", title="Loss curves of every cell")
    ax.legend(fontsize=7)
    return _save(fig, folder, "loss_curves.png")


def pair_matrix(groups: list[dict[str, Any]], axis: str, metric: str) -> tuple[list[str], np.ndarray]:
    """The operations named by an axis's labels ("a", "a+b") and their symmetric matrix.

    Entry (a, b) is the mean over seeds of ``metric`` (in %) of the cell "a+b" (or "b+a"),
    entry (a, a) that of "a"; NaN where no cell has finished.
    """
    names = list(dict.fromkeys(part for g in groups for part in str(g[axis]).split("+")))
    index = {n: i for i, n in enumerate(names)}
    grid = np.full((len(names), len(names)), np.nan)
    for g in groups:
        if g["values"].get(metric):
            parts = str(g[axis]).split("+")
            a, b = index[parts[0]], index[parts[-1]]
            grid[a, b] = grid[b, a] = mean_std([100 * v for v in g["values"][metric]])[0]
    return names, grid


def heatmap(groups: list[dict[str, Any]], axis: str, metric: str, folder: Path) -> str | None:
    """A symmetric matrix from an axis labelled "a" (diagonal) and "a+b" (off-diagonal).

    SimCLR's Figure 5 layout (``heatmap:`` in a sweep spec, e.g. aug_pairs.yaml); cells
    not run yet stay blank.
    """
    names, grid = pair_matrix(groups, axis, metric)
    if np.isnan(grid).all() or len(names) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.0 * len(names) + 1.6, 0.9 * len(names) + 0.8))
    im = ax.imshow(grid, cmap="viridis")
    for i in range(len(names)):
        for j in range(len(names)):
            if not np.isnan(grid[i, j]):
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.1f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if grid[i, j] < np.nanmean(grid) else "black",
                )
    ax.set_xticks(range(len(names)), names, rotation=30)
    ax.set_yticks(range(len(names)), names)
    name = metric_label(metric)
    ax.set(title=f"{name} (%): one operation (diagonal) or two, mean over seeds")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, folder, f"heatmap_{metric}.png")


def _time_plot(rows: list[dict[str, Any]], groups: list[dict[str, Any]], axes: list[str], folder: Path) -> str | None:
    """Wall time per grid point; only when every finished cell ran on one machine (as the table's column)."""
    plt = _plt()
    gs = [g for g in groups if g["values"].get("wall_time_s")]
    ran_on = machines(rows)
    if not gs or len(ran_on) > 1:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    stats = [mean_std(g["values"]["wall_time_s"]) for g in gs]
    names = [",".join(str(g[a]) for a in axes) for g in gs]
    ax.bar(range(len(gs)), [m for m, _ in stats], yerr=[s for _, s in stats], capsize=3, color="C1")
    ax.set_xticks(range(len(gs)), names, rotation=30, ha="right", fontsize=8)
    where = next(iter(ran_on), "unrecorded")
    ax.set(ylabel="wall time (s)", title=f"Time per run (training + evaluation) on {where}")
    return _save(fig, folder, "time.png")


def milestone_curve(run_dir: Path, metric: str = "knn_top1") -> list[tuple[int, float, float | None]]:
    """A run's evaluated milestones (``selfsup eval RUN --milestones``) as (step, %, training minutes).

    The minutes are interpolated from the run's step log (``train_time_s``); None where it
    logged no time.
    """
    path = run_dir / METRICS_JSON
    if not path.is_file():
        return []
    milestones = milestone_rows(json.loads(path.read_text()))
    points = [(int(m["step"]), 100 * float(m[metric])) for m in milestones if m.get(metric) is not None]
    log = [(r["step"], r["train_time_s"]) for r in read_jsonl(run_dir / METRICS_JSONL) if "train_time_s" in r]
    if len(log) < 2:
        return [(step, value, None) for step, value in points]
    steps, seconds = zip(*sorted(log), strict=True)
    return [(step, value, float(np.interp(step, steps, seconds)) / 60) for step, value in points]


def milestone_plot(sweep_dir: Path, rows: list[dict[str, Any]], axes: list[str], folder: Path) -> str | None:
    """The kNN top-1 of every cell's milestones against training minutes (one machine) or steps.

    Equal-time comparisons (``--time-budget`` with milestones) and the epochs table from
    one long run: one line per cell, one colour per grid point.
    """
    done = [r for r in rows if r.get("status") == "done"]
    curves = {r["cell"]: milestone_curve(sweep_dir / r["cell"]) for r in done}
    if not any(len(c) > 1 for c in curves.values()):
        return None
    ran_on = machines(rows)
    by_time = len(ran_on) == 1 and all(t is not None for c in curves.values() for _, _, t in c)
    where = next(iter(ran_on), "unrecorded")
    xlabel = f"training minutes on {where}" if by_time else "step"
    scales = {load_run_config(sweep_dir / r["cell"]).train.budget_scale for r in done if curves[r["cell"]]}
    scale = next(iter(scales)) if by_time and len(scales) == 1 else 1.0
    if scale != 1.0:  # stretched budgets (--budget-scale): the spec's minutes, as on the machine it names
        xlabel = f"budget minutes (training minutes on {where} / {scale:g})"
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    names = list(dict.fromkeys(",".join(str(r[a]) for a in axes) for r in done))
    drawn = set()
    for row in done:
        curve = curves[row["cell"]]
        if not curve:
            continue
        name = ",".join(str(row[a]) for a in axes)
        xs = [t / scale if by_time and t is not None else step for step, _, t in curve]
        label = name if name not in drawn else None
        drawn.add(name)
        ax.plot(xs, [v for _, v, _ in curve], "o-", ms=3, lw=1.2, color=f"C{names.index(name) % 10}", label=label)
    ax.set(xlabel=xlabel, ylabel="kNN top-1 (%)", title="kNN top-1 of each milestone (one line per seed)")
    ax.legend(fontsize=7)
    return _save(fig, folder, "milestones.png")


def report_sweep(sweep_dir: Path) -> Path:
    """Write ``sweep_dir/report.html`` from its results.csv (see the module docstring)."""
    import yaml

    from .results import markdown_table

    spec = yaml.safe_load((sweep_dir / SPEC_FILE).read_text())
    csv_path = sweep_dir / "results.csv"
    if not csv_path.is_file():
        raise RunDirError(f"{sweep_dir} has no results.csv yet; run the sweep first (selfsup sweep SPEC)")
    rows = read_csv(csv_path)
    axes = list((spec.get("grid") or {}).keys())
    folder = sweep_dir / FIGURES
    groups = aggregate(rows, axes)
    command = table_command(spec)
    table = markdown_table(rows, axes, command, spec.get("reference"), spec.get("compare")).split("\n")
    head = [c.strip() for c in table[0].strip("|").split("|")]
    body_rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:] if line.startswith("|")]
    body = [
        f"<p class='muted'>{html.escape(str(sweep_dir))}: {command} sweep over "
        f"{html.escape(', '.join(axes))}, seeds {record_seeds(spec)}, scale {spec.get('use_scale') or 'full'}</p>",
        "<h2>Results (mean ± std over seeds)</h2>",
        _table(head, body_rows),
    ]
    x = spec.get("x_axis") or axes[0]
    plot_axes = [x] + [a for a in axes if a != x]  # the x axis first, a line per value of the rest
    plots = [
        accuracy_plot(groups, plot_axes, m, folder, spec.get("reference"))
        for m in ("knn_top1", "linear_top1", "test_top1")
    ]
    if spec.get("heatmap"):
        plots = [heatmap(groups, spec["heatmap"], m, folder) for m in ("linear_top1", "knn_top1")] + plots
    plots += [
        milestone_plot(sweep_dir, rows, axes, folder),
        _sweep_loss_plot(sweep_dir, rows, axes, folder),
        _time_plot(rows, groups, axes, folder),
    ]
    body += ["<h2>Plots</h2>"] + [_img(p, p) for p in plots if p]
    cols = ["cell", "seed", "status", *COLUMNS]
    body += ["<h2>Every run</h2>", _table(cols, [[_fmt(r.get(c)) for c in cols] for r in rows])]
    body += ["<h2>Spec</h2>", f"<pre>{html.escape(yaml.safe_dump(spec, sort_keys=False))}</pre>"]
    out = sweep_dir / "report.html"
    write_atomic(out, _page(f"selfsup sweep: {spec.get('name', sweep_dir.name)}", body).encode())
    return out


def _runs_signals(method: str, runs: list[tuple[str, list[dict[str, Any]]]], folder: Path) -> str | None:
    """One method's runs side by side: the loss and each logged signal against steps, a line per run."""
    steps = {name: [r for r in records if "loss" in r and "step" in r] for name, records in runs}
    keys = ["loss"] + sorted(
        {
            k
            for rows in steps.values()
            for r in rows
            for k, v in r.items()
            if k not in _BOOKKEEPING and isinstance(v, (int, float))
        }
    )
    if not any(steps.values()):
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(keys), 1, figsize=(7.2, 2.3 * len(keys)), squeeze=False, sharex=True)
    for ax, key in zip(axes[:, 0], keys):
        for name, rows in steps.items():
            points = [r for r in rows if key in r]
            if points:
                ax.plot([r["step"] for r in points], [r[key] for r in points], lw=1, label=name)
        ax.set_ylabel(key.replace("_", " "), fontsize=8)
    axes[-1, 0].set_xlabel("step")
    axes[0, 0].set_title(f"{method}: what each run logged")
    axes[0, 0].legend(fontsize=7, ncol=2)
    return _save(fig, folder, f"runs_{method}.png")


def report_runs(folder: Path) -> Path:
    """Write ``folder/report.html`` for a folder of runs (see the module docstring).

    Raises:
        RunDirError: If no subfolder is a run directory.
    """
    import yaml

    runs = sorted(p for p in folder.iterdir() if (p / CONFIG).is_file())
    if not runs:
        raise RunDirError(f"{folder} is neither a run directory, a sweep folder nor a folder of runs")
    by_method: dict[str, list[tuple[str, list[dict[str, Any]]]]] = {}
    for run in runs:
        method = str(yaml.safe_load((run / CONFIG).read_text())["method"]["name"])
        by_method.setdefault(method, []).append((run.name, read_jsonl(run / METRICS_JSONL)))
    lines = [line for line in render_runs(folder, folder).splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    body = [f"<p class='muted'>{html.escape(str(folder))}: {len(runs)} runs</p>", "<h2>Runs</h2>"]
    body.append(_table(head, [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]))
    plots = [_runs_signals(m, named, folder / FIGURES) for m, named in sorted(by_method.items())]
    body += ["<h2>Signals per method</h2>"] + [_img(p, p) for p in plots if p]
    out = folder / "report.html"
    write_atomic(out, _page(f"selfsup runs: {folder.name}", body).encode())
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def make_report(path: str | Path, samples: int = 2000, embedding: bool = True) -> Path:
    """Report on a run, a sweep folder or a folder of runs; returns the path of report.html.

    Raises:
        RunDirError: If ``path`` is none of these.
    """
    p = Path(path)
    if (p / SPEC_FILE).is_file():
        return report_sweep(p)
    if (p / CONFIG).is_file():
        return report_run(p, samples, embedding)
    if p.is_dir():
        return report_runs(p)
    raise RunDirError(f"{p} is neither a run directory, a sweep folder nor a folder of runs")


def render_runs(folder: Path, root: Path) -> str:
    """The ``runs`` block: one row per run directly under ``folder``.

    Besides accuracy and cost, each row has the run's health: its final loss and the last
    logged embedding std (the collapse signal). A run with no summary record (still
    training, or killed) gets no row, only its name in a line after the table.
    """
    runs = sorted(p for p in folder.iterdir() if (p / CONFIG).is_file())
    head = (
        "| run | kNN top-1 (%) | linear top-1 (%) | final loss | embedding std | steps | training (min) "
        "| machine | precision |"
    )
    out = [head, "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    running = []
    for run in runs:
        records = read_jsonl(run / METRICS_JSONL)
        summary: dict[str, Any] = next((r for r in reversed(records) if r.get("summary")), {})
        if not summary:  # still training (or killed): its live numbers are not a result
            running.append(run.name)
            continue
        row = run_row(run)

        def pct(key: str, row: dict[str, Any] = row) -> str:
            return f"{100 * row[key]:.1f}" if key in row else "-"

        def num(key: str, digits: int, row: dict[str, Any] = row) -> str:
            return f"{row[key]:.{digits}f}" if row.get(key) is not None else "-"

        minutes = f"{row['train_time_s'] / 60:.1f}" if row.get("train_time_s") is not None else "-"
        out.append(
            f"| {run.name} | {pct('knn_top1')} | {pct('linear_top1')} | {num('final_loss', 3)} "
            f"| {num('embedding_std', 4)} | {summary.get('step', '-')} | {minutes} "
            f"| {row.get('machine', '-')} | {row.get('precision', '-')} |"
        )
    if running:
        out.append(f"\nNot finished (left out): {', '.join(running)}.")
    return "\n".join(out) + "\n"
