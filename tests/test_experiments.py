"""Sweeps (run, resume after a kill, plan), results tables, HTML reports, TensorBoard files."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, epoch_records, subprocess_env, tiny_overrides
from selfsup.errors import ConfigError, RunDirError
from selfsup.lab import SweepOptions, load_spec, run_sweep
from selfsup.lab.report import make_report
from selfsup.lab.results import markdown_table, mean_std, noise
from selfsup.lab.sweep import cells, recorded_cells


def write_recipe(path: Path, data: Path, **extra: Any) -> Path:
    """A tiny recipe (YAML sections) from the test overrides."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in tiny_overrides(data, **{"train.eval_after": True, "eval.linear_epochs": 2, **extra}).items():
        section, name = key.split(".")
        nested.setdefault(section, {})[name] = value
    path.write_text(yaml.safe_dump(nested))
    return path


def write_spec(folder: Path, data: Path, **fields: Any) -> Path:
    write_recipe(folder / "tiny.yaml", data)
    spec = {
        "name": "tiny",
        "command": "pretrain",
        "base": "tiny.yaml",
        "grid": {"method.temperature": [0.1, 0.5]},
        "seeds": [0, 1],
        "scale": {"small": {"train.epochs": 1}},
        **fields,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def images_exist(report: Path) -> list[str]:
    srcs = re.findall(r"<img src='([^']+)'", report.read_text())
    assert srcs, "the report shows no image"
    for src in srcs:
        assert (report.parent / src).is_file(), src
    return srcs


def test_sweep_end_to_end_and_report(shared_folder: Path, tmp_path: Path) -> None:
    reference = {"source": "paper kNN", "metric": "knn_top1", "values": {0.1: 61, 0.5: 66.5}}
    spec = write_spec(tmp_path, shared_folder, reference=reference)
    lines: list[str] = []
    result = run_sweep(spec, out=tmp_path / "sweep", log=lines.append)
    assert len(result.rows) == 4 and all(r["status"] == "done" for r in result.rows)
    for row in result.rows:
        run = tmp_path / "sweep" / row["cell"]
        assert (run / "config.yaml").is_file() and (run / "checkpoints").is_dir()
        assert 0 <= row["linear_top1"] <= 1 and row["wall_time_s"] > 0 and row["peak_memory_mb"] > 0
    with open(tmp_path / "sweep" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method.temperature"] for r in rows] == ["0.1", "0.1", "0.5", "0.5"]
    assert {
        "final_loss",
        "knn_top1",
        "linear_top1",
        "wall_time_s",
        "views_per_s",
        "peak_memory_mb",
        "embedding_std",
    } <= set(rows[0])
    assert 0 < float(rows[0]["embedding_std"]) < 1  # SimCLR's logged spread, the collapse signal
    table = [line for line in result.table.splitlines() if line.startswith("|")]
    assert result.table.splitlines()[-5].startswith("Best kNN top-1: ")  # what stands out of seed noise
    assert result.table.splitlines()[-3].startswith("Seed noise (kNN top-1): std ")  # and how large it is
    assert result.table.splitlines()[-1].startswith("Measured ")  # the machine and date of the cells
    assert table[0].startswith("| method.temperature | seeds | kNN top-1 (%) | linear top-1 (%) | paper kNN (%) |")
    assert len(table) == 4 and all("±" in line for line in table[2:]) and "| 0.5 | 2 |" in table[3]
    assert [line.split(" | ")[4] for line in table[2:]] == ["61", "66.5"]  # the published values beside ours
    assert (tmp_path / "sweep" / "table.md").read_text().strip() == result.table
    # Running it again redoes nothing.
    again = run_sweep(spec, out=tmp_path / "sweep", log=lines.append)
    assert "4 done, 0 to run" in lines[-2] and again.table == result.table
    # The sweep's report, and one run's report with its embedding and retrievals.
    srcs = images_exist(make_report(tmp_path / "sweep"))
    assert {
        "report/accuracy_knn_top1.png",
        "report/accuracy_linear_top1.png",
        "report/loss_curves.png",
        "report/time.png",
    } <= set(srcs)
    run_report = make_report(tmp_path / "sweep" / result.rows[0]["cell"], samples=24)
    assert {
        "report/loss.png",
        "report/lr.png",
        "report/augmentation.png",
        "report/signals.png",  # SimCLR's contrastive top-1 and embedding std
        "report/embedding.png",
        "report/neighbours.png",
    } <= set(images_exist(run_report))
    assert "linear_top1" in run_report.read_text()
    # TensorBoard events for every run, readable by TensorBoard itself.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "sweep" / result.rows[0]["cell"] / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "epoch/epoch_loss"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6, 8, 10, 12]


@pytest.mark.slow
def test_killed_sweep_finishes_only_missing_cells(shared_folder: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, shared_folder)
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "selfsup", "sweep", str(spec), "--out", str(out)]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while len(list(out.glob("*/metrics.json"))) < 2:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.time() - t0 < 300
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # between cells, or early in the third
    proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")}
    assert len(finished) == 2
    r = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "2 done, 2 to run" in r.stdout
    for name, mtime in finished.items():  # not redone
        assert (out / name / "metrics.json").stat().st_mtime_ns == mtime
    assert len(list(out.glob("*/metrics.json"))) == 4
    with open(out / "results.csv") as f:
        assert all(row["status"] == "done" for row in csv.DictReader(f))


def test_table_is_current_after_each_cell(shared_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep stopped after its first cell (here: the second cell raises) leaves a table of that cell."""
    import selfsup.lab.sweep as sweep_module

    real = sweep_module.run_cell
    calls: list[str] = []

    def first_then_stop(*args: Any, **kwargs: Any) -> None:
        calls.append(args[1].dir.name)
        if len(calls) > 1:
            raise KeyboardInterrupt
        real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "run_cell", first_then_stop)
    out = tmp_path / "sweep"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(write_spec(tmp_path, shared_folder, seeds=[0]), out=out, log=lambda _m: None)
    with open(out / "results.csv") as f:
        status = {row["method.temperature"]: row["status"] for row in csv.DictReader(f)}
    assert status == {"0.1": "done", "0.5": "missing"}, status
    assert "1 cell(s) not finished" in (out / "table.md").read_text()


def test_plan_and_single_cells(shared_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from selfsup.cli import main

    spec = write_spec(tmp_path, shared_folder)
    out = tmp_path / "sweep"
    assert main(["sweep", str(spec), "--out", str(out), "--scale", "small", "--plan"]) == 0
    commands = capsys.readouterr().out.strip().splitlines()
    assert len(commands) == 4 and all(c.startswith("selfsup sweep ") and "--cell " in c for c in commands)
    assert (out / "plan.sh").read_text().strip().splitlines() == commands
    name = commands[1].split("--cell ")[1].strip("'")
    assert main(["sweep", str(spec), "--out", str(out), "--scale", "small", "--cell", name]) == 0
    done = [p.parent.name for p in out.glob("*/metrics.json")]
    assert done == [name]
    with open(out / "results.csv") as f:
        assert [row["status"] for row in csv.DictReader(f)].count("done") == 1
    code = main(["sweep", str(spec), "--out", str(out), "--scale", "small", "--cell", "nope"])
    assert code == 2 and "no cell 'nope'" in capsys.readouterr().err


def test_finetune_sweep(shared_folder: Path, tmp_path: Path) -> None:
    write_recipe(tmp_path / "tiny.yaml", shared_folder)
    spec = tmp_path / "ft.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "ft",
                "command": "finetune",
                "encoder": {"base": "tiny.yaml"},
                "grid": {
                    "finetune.labels": [6, 12],
                    "init": [{"label": "pretrained"}, {"label": "scratch", "finetune.from_scratch": True}],
                },
                "seeds": [0],
                "overrides": {"finetune.epochs": 2, "finetune.val_size": 6, "finetune.batch_size": 4},
            }
        )
    )
    result = run_sweep(spec, out=tmp_path / "sweep", log=lambda s: None)
    assert len(result.rows) == 4 and all(0 <= r["test_top1"] <= 1 for r in result.rows)
    assert (tmp_path / "sweep" / "encoder,seed=0" / "checkpoints").is_dir()
    # Each cell keeps its own per-epoch curve; the encoder's run is only read.
    for row, log in [("pretrained", "labels-6"), ("scratch", "labels-6-random-init")]:
        assert len(epoch_records(tmp_path / "sweep" / f"finetune.labels=6,init={row},seed=0" / "finetune" / log)) == 2
    assert not (tmp_path / "sweep" / "encoder,seed=0" / "finetune").exists()
    assert "finetune" not in json.loads((tmp_path / "sweep" / "encoder,seed=0" / "metrics.json").read_text())
    cell_metrics = json.loads(
        (tmp_path / "sweep" / "finetune.labels=6,init=pretrained,seed=0" / "metrics.json").read_text()
    )
    assert cell_metrics["encoder"] == str(tmp_path / "sweep" / "encoder,seed=0")  # the record names its encoder
    assert result.table.splitlines()[0].startswith("| finetune.labels | init | seeds | test top-1 (%)")
    # The docs block shows what the sweep's table shows (the encoder's precision and time too).
    from selfsup.lab.docs import render_table

    block = render_table(tmp_path / "sweep", tmp_path)
    assert result.table in block and "precision unrecorded" not in block
    images_exist(make_report(tmp_path / "sweep"))
    scratch = [r for r in result.rows if r["init"] == "scratch"]
    assert all("knn_top1" not in r for r in scratch)  # no encoder behind them: no encoder columns
    assert "| steps |" not in result.table.splitlines()[0]  # the encoder's steps are one number
    # Pretrained again on another machine (weights are not committed), the encoder's record
    # changes; the finished cells keep the figures of the run they were fine-tuned from.
    before = {r["cell"]: r.get("knn_top1") for r in result.rows}
    assert cell_metrics["encoder_run"]["knn_top1"] == before["finetune.labels=6,init=pretrained,seed=0"]
    enc_metrics = tmp_path / "sweep" / "encoder,seed=0" / "metrics.json"
    enc_metrics.write_text(json.dumps({**json.loads(enc_metrics.read_text()), "knn_top1": 0.987}))
    again = run_sweep(spec, out=tmp_path / "sweep", log=lambda s: None)
    assert {r["cell"]: r.get("knn_top1") for r in again.rows} == before
    # A cell from scratch needs the encoder's config, not its weights: alone, it pretrains nothing.
    cell = "finetune.labels=6,init=scratch,seed=0"
    alone = run_sweep(spec, out=tmp_path / "alone", log=lambda s: None, options=SweepOptions(only=cell))
    assert not (tmp_path / "alone" / "encoder,seed=0").exists()
    (row,) = [r for r in alone.rows if r["status"] == "done"]
    assert row["test_top1"] == next(r["test_top1"] for r in scratch if r["finetune.labels"] == "6")


def test_one_table_from_fine_tuning_and_semi_supervised_cells(shared_folder: Path, tmp_path: Path) -> None:
    write_recipe(tmp_path / "tiny.yaml", shared_folder)
    labels = [{"label": n, "finetune.labels": [n], "semi.labels": n} for n in (6, 12)]
    spec = tmp_path / "le.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "le",
                "command": "finetune",
                "base": "tiny.yaml",
                "encoder": {"base": "tiny.yaml"},
                "grid": {
                    "labels": labels,
                    "row": [
                        {"label": "probe", "finetune.freeze_encoder": True},
                        {
                            "label": "supervised",
                            "command": "semi",
                            "method.name": "supervised",
                            "semi.labeled_batch_size": 4,
                        },
                    ],
                },
                "seeds": [0],
                "overrides": {"finetune.epochs": 1, "finetune.val_size": 6, "finetune.batch_size": 4},
                "scale": {"small": {"grid": {"labels": labels[:1]}}},
            }
        )
    )
    s = load_spec(spec)
    assert [c.command for c in cells(s, tmp_path)] == ["finetune", "semi"] * 2
    assert [c.dir.name for c in cells(s, tmp_path, "small")] == [
        "labels=6,row=probe,seed=0",
        "labels=6,row=supervised,seed=0",
    ]
    result = run_sweep(spec, out=tmp_path / "sweep", log=lambda s: None, options=SweepOptions(scale="small"))
    assert [r["status"] for r in result.rows] == ["done", "done"] and all(0 <= r["test_top1"] <= 1 for r in result.rows)
    # The semi-supervised cell is a run of its own; only the fine-tuning one used the encoder.
    assert (tmp_path / "sweep" / "labels=6,row=supervised,seed=0" / "checkpoints").is_dir()
    assert "| 6 | supervised | 1 |" in result.table and "test top-1 (%)" in result.table.splitlines()[0]
    bad = yaml.safe_load(spec.read_text())
    bad["grid"]["row"][1]["command"] = "dance"
    spec.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="command must be one of"):
        load_spec(spec)


def test_semi_cell_started_from_the_sweeps_encoder(
    shared_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from selfsup.methods import common

    loaded: list[str] = []
    real_load = common.load_backbone_weights
    monkeypatch.setattr(common, "load_backbone_weights", lambda b, src: (loaded.append(str(src)), real_load(b, src)))
    write_recipe(tmp_path / "tiny.yaml", shared_folder)
    row = {"label": "from-encoder", "command": "semi", "method.name": "supervised", "model.init": "@encoder"}
    raw = {
        "name": "le",
        "command": "finetune",
        "base": "tiny.yaml",
        "encoder": {"base": "tiny.yaml"},
        "grid": {"row": [{**row, "semi.labels": 6, "semi.labeled_batch_size": 4}]},
        "seeds": [0],
    }
    spec = tmp_path / "le.yaml"
    spec.write_text(yaml.safe_dump(raw))
    out = tmp_path / "sweep"
    result = run_sweep(spec, out=out, log=lambda s: None)
    (cell,) = result.rows
    assert cell["status"] == "done" and 0 <= cell["test_top1"] <= 1
    encoder = out / "encoder,seed=0"
    saved = yaml.safe_load((out / "row=from-encoder,seed=0" / "config.yaml").read_text())
    assert saved["model"]["init"] == str(encoder)
    # The cell's cost counts the encoder's pretraining.
    enc_train = [r for r in map(json.loads, (encoder / "metrics.jsonl").read_text().splitlines()) if r.get("summary")]
    assert cell["wall_time_s"] >= enc_train[-1]["train_time_s"] > 0
    noted = json.loads((out / "row=from-encoder,seed=0" / "metrics.json").read_text())["encoder_run"]
    assert noted["train_time_s"] == enc_train[-1]["train_time_s"]  # kept if the encoder is pretrained again
    # It started from the encoder's weights (the sweep pretrained it first).
    assert loaded == [str(encoder)]
    # The record still answers the cell when the folder moves (another clone, another --out).
    moved = tmp_path / "elsewhere" / "sweep"
    shutil.copytree(out, moved)
    messages: list[str] = []
    again = run_sweep(spec, out=moved, log=messages.append)
    assert again.rows[0]["status"] == "done" and any("1 done, 0 to run" in m for m in messages)
    # A row that starts from the encoder needs the encoder: section.
    del raw["encoder"]
    spec.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="needs an encoder"):
        load_spec(spec)


def test_scale_profiles_change_axes(shared_folder: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, shared_folder, scale={"small": {"grid": {"method.temperature": [0.2]}}})
    s = load_spec(spec)
    assert [c.dir.name for c in cells(s, tmp_path, "small")] == [
        "method.temperature=0.2,seed=0",
        "method.temperature=0.2,seed=1",
    ]
    assert len(cells(s, tmp_path)) == 4


def test_scale_profile_sets_its_own_seeds(shared_folder: Path, tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path, shared_folder, scale={"noise": {"grid": {"method.temperature": [0.2]}, "seeds": [4, 5, 6]}}
    )
    s = load_spec(spec)
    assert [c.dir.name for c in cells(s, tmp_path, "noise")] == [f"method.temperature=0.2,seed={k}" for k in (4, 5, 6)]
    assert [c.seed for c in cells(s, tmp_path)] == [0, 1, 0, 1]  # the full setting keeps the spec's seeds
    # The seeds are not a config key: the cell's config differs only in its own seed.
    assert s.config({"train.seed": 5}, "noise").train.seed == 5
    # A committed folder is read back with the profile's seeds (the docs generator's view).
    run_sweep(spec, out=tmp_path / "sweep", log=lambda s: None, options=SweepOptions(scale="noise", plan=True))
    lines = (tmp_path / "sweep" / "plan.sh").read_text().splitlines()
    assert len(lines) == 3 and all("--scale noise" in line for line in lines) and "seed=6" in lines[2]
    recorded, axes = recorded_cells(tmp_path / "sweep")
    assert axes == ["method.temperature"] and [c.seed for c in recorded] == [4, 5, 6]


def test_scale_profile_changes_the_encoder_alone(shared_folder: Path, tmp_path: Path) -> None:
    from selfsup.lab.sweep import _encoder_config

    write_recipe(tmp_path / "tiny.yaml", shared_folder)
    profile = {"train.epochs": 2, "encoder": {"train.epochs": 5, "optim.lr": 0.3}}
    raw = {
        "name": "le",
        "command": "finetune",
        "base": "tiny.yaml",
        "encoder": {"base": "tiny.yaml", "overrides": {"optim.lr": 0.1}},
        "grid": {"finetune.labels": [[6]]},
        "seeds": [0],
        "scale": {"cpu": profile},
    }
    spec = tmp_path / "le.yaml"
    spec.write_text(yaml.safe_dump(raw))
    s = load_spec(spec)
    enc = _encoder_config(s, 0, "cpu")
    assert (enc.train.epochs, enc.optim.lr) == (5, 0.3)  # the scale's encoder values come last
    assert s.config({}, "cpu").train.epochs == 2  # the cells keep the profile's own
    assert _encoder_config(s, 0, None).optim.lr == 0.1
    raw["scale"]["cpu"]["encoder"] = {"train.epoch": 5}
    spec.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="'train.epoch' is not a config key"):
        load_spec(spec)


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"colour": 1}, "unknown sweep field 'colour'"),
        ({"grid": {"train.epoch": [1, 2]}}, "'train.epoch' is not a config key"),
        ({"grid": {"method.temperature": []}}, "needs a non-empty list"),
        ({"base": "missing.yaml"}, "base recipe missing.yaml not found"),
        ({"command": "dance"}, "command must be one of"),
        ({"seeds": "zero"}, "seeds must be a non-empty list of integers"),
        ({"seeds": []}, "seeds must be a non-empty list of integers"),
        ({"scale": {"cpu": {"seeds": [0, "one"]}}}, "scale 'cpu': seeds must be a non-empty list"),
        ({"command": "finetune"}, "needs an encoder"),
        ({"reference": {"metric": "knn_top1", "values": {0.3: 50}}}, "0.3 is not a value of grid axis"),
        ({"reference": {"metric": "knn", "values": {0.1: 50}}}, "metric must be one of"),
        ({"reference": {"metric": "knn_top1", "values": {0.1: 0.5e3}}}, "must be an accuracy in %"),
        ({"reference": {"metric": "knn_top1"}}, "needs values"),
        ({"reference": {"metric": "knn_top1", "values": {0.1: {64: 50}}}}, "need a second grid axis"),
        ({"reference": {"metric": "knn_top1", "values": {0.1: 50, 0.5: {64: 50}}}}, "all numbers or all mappings"),
        ({"scale": {"cpu": {"grid": {"train.epochs": [1]}}}}, "changes grid axis 'train.epochs'"),
    ],
)
def test_bad_specs(fields: dict, message: str, shared_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        load_spec(write_spec(tmp_path, shared_folder, **fields))


def test_sweep_folder_is_not_reused_for_another_sweep(shared_folder: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, shared_folder)
    run_sweep(spec, out=tmp_path / "sweep", log=lambda s: None, options=SweepOptions(plan=True))
    with pytest.raises(ConfigError, match="no scale profile 'huge'"):
        run_sweep(spec, out=tmp_path / "sweep", log=lambda s: None, options=SweepOptions(scale="huge"))
    with pytest.raises(RunDirError, match="holds another sweep"):
        run_sweep(spec, out=tmp_path / "sweep", log=lambda s: None, options=SweepOptions(scale="small", plan=True))
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not a sweep folder"):
        run_sweep(spec, out=tmp_path / "stuff", log=lambda s: None)


def test_every_ablation_spec_loads() -> None:
    specs = sorted((REPO / "configs" / "ablations").glob("*.yaml"))
    names = {p.stem for p in specs}
    assert {
        "batch_size",
        "temperature",
        "epochs",
        "optimizer",
        "labels",
        "augmentations",
        "backbones",
        "methods",
        "semi_methods",
        "aug_pairs",
        "heads",
        "losses",
        "moco",
        "data_batch",
    } <= names
    for path in specs:
        s = load_spec(path)
        assert "cpu" in s.scale, f"{path.name} has no cpu scale profile"
        for scale in (None, *s.scale):
            for c in cells(s, Path("x"), scale):  # every cell's config is a valid one
                s.config({**c.overrides, "train.seed": c.seed}, scale)


def test_noise_line_pools_the_seed_variance() -> None:
    rows = [
        {"t": t, "seed": k, "status": "done", "knn_top1": v}
        for t, vals in (("a", [0.50, 0.52]), ("b", [0.40, 0.46]), ("c", [0.3]))
        for k, v in enumerate(vals)
    ]
    # std 1.41 and 4.24 points; pooled sqrt((2 + 18) / 2) = 3.16; the one-seed point is left out.
    assert noise(rows, ["t"], "knn_top1") == (
        "Seed noise (kNN top-1): std 1.4 to 4.2 points over 2 grid points, pooled 3.2 (twice that: 6.3)."
    )
    assert (
        noise(rows[:2], ["t"], "knn_top1") == "Seed noise (kNN top-1): std 1.4 points over 2 seeds (twice that: 2.8)."
    )
    assert noise(rows[4:], ["t"], "knn_top1") == ""


def test_reference_values_are_drawn_beside_ours(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from selfsup.lab import report

    groups = [{"t": t, "n": 2, "values": {"knn_top1": [0.4, 0.42]}} for t in ("0.1", "0.5")]
    drawn: list[Any] = []
    monkeypatch.setattr(report, "_save", lambda fig, folder, name: drawn.append(fig) or name)
    ref = {"source": "seed 000", "metric": "knn_top1", "values": {0.07: 64, 0.5: 66}}
    assert report.accuracy_plot(groups, ["t"], "knn_top1", tmp_path, ref) == "accuracy_knn_top1.png"
    line = next(ln for ln in drawn[0].axes[0].get_lines() if ln.get_label() == "seed 000")
    assert list(line.get_xdata()) == [0.07, 0.5] and list(line.get_ydata()) == [64, 66]
    report.accuracy_plot(groups, ["t"], "linear_top1", tmp_path, ref)  # another metric: nothing drawn
    report.accuracy_plot(groups, ["t"], "knn_top1", tmp_path, {**ref, "metric": "linear_top1"})
    assert not any(ln.get_label() == "seed 000" for ln in drawn[-1].axes[0].get_lines())


def test_reference_by_two_axes(monkeypatch: pytest.MonkeyPatch, shared_folder: Path, tmp_path: Path) -> None:
    """Seed 001's accuracy by labels x batch: a column in the table, a dashed line per batch."""
    from selfsup.lab import report
    from selfsup.lab.results import markdown_table

    grid = {"method.temperature": [0.1, 0.5], "train.batch_size": [8, 16]}
    values = {0.1: {8: 61, 16: 62.5}, 0.5: {8: 64}}
    reference = {"source": "seed 001", "metric": "knn_top1", "values": values}
    load_spec(write_spec(tmp_path, shared_folder, grid=grid, reference=reference))  # a valid spec
    for bad, message in (
        ({0.1: {32: 50}}, "32 is not a value of grid axis 'train.batch_size'"),
        ({0.1: {8: 500}}, "must be an accuracy in %"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_spec(write_spec(tmp_path, shared_folder, grid=grid, reference={**reference, "values": bad}))
    axes = list(grid)
    rows = [
        {"method.temperature": t, "train.batch_size": b, "seed": 0, "status": "done", "knn_top1": 0.4}
        for t in ("0.1", "0.5")
        for b in ("8", "16")
    ]
    table = markdown_table(rows, axes, reference=reference).splitlines()
    assert table[0].split(" | ")[5] == "seed 001 (%)"
    assert [line.split(" | ")[5] for line in table[2:6]] == ["61", "62.5", "64", "-"]
    groups = [{**{a: r[a] for a in axes}, "n": 1, "values": {"knn_top1": [0.4]}} for r in rows]
    drawn: list[Any] = []
    monkeypatch.setattr(report, "_save", lambda fig, folder, name: drawn.append(fig) or name)
    report.accuracy_plot(groups, axes, "knn_top1", tmp_path, reference)
    ax = drawn[0].axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    ours = {c.get_label(): c.lines[0].get_color() for c in ax.containers}  # the error-bar series
    seed = lines["seed 001, train.batch_size=8"]
    assert list(seed.get_xdata()) == [0.1, 0.5] and list(seed.get_ydata()) == [61, 64]
    assert seed.get_color() == ours["train.batch_size=8"] != ours["train.batch_size=16"]
    assert list(lines["seed 001, train.batch_size=16"].get_ydata()) == [62.5]


def test_time_plot_only_for_cells_of_one_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Wall times of two machines do not compare: no bars then, as the table drops its column."""
    from selfsup.lab import report

    rows = [{"t": t, "seed": 0, "status": "done", "wall_time_s": 60.0, "machine": "Zen 3"} for t in ("a", "b")]
    groups = [{"t": t, "n": 1, "values": {"wall_time_s": [60.0]}} for t in ("a", "b")]
    drawn: list[Any] = []
    monkeypatch.setattr(report, "_save", lambda fig, folder, name: drawn.append(fig) or name)
    assert report._time_plot(rows, groups, ["t"], tmp_path) == "time.png"
    assert drawn[0].axes[0].get_title().endswith("on Zen 3")
    rows[1]["machine"] = "Zen 5"
    assert report._time_plot(rows, groups, ["t"], tmp_path) is None
    rows[1]["status"] = "missing"  # an unfinished cell's machine does not count
    assert report._time_plot(rows, groups, ["t"], tmp_path) == "time.png"


def test_milestone_curves_against_minutes_or_steps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each cell's evaluated milestones: by training minutes on one machine (in budget minutes where
    every cell stretched its budget alike), by step across machines."""
    from selfsup.lab import report

    for cell, slow in (("t=a,seed=0", 1.0), ("t=b,seed=0", 2.0)):
        d = tmp_path / cell
        d.mkdir()
        log = [{"step": s, "train_time_s": slow * 6 * s} for s in (10, 20, 30, 40)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
        stones = {str(s): {"step": s, "knn_top1": 0.3 + s / 1000} for s in (20, 40)}
        (d / "metrics.json").write_text(json.dumps({"milestones": stones}))
        (d / "config.yaml").write_text("train: {budget_scale: 1.0}\n")  # a finished cell's saved config
    assert report.milestone_curve(tmp_path / "t=b,seed=0") == [(20, 32.0, 4.0), (40, 34.0, 8.0)]
    rows = [{"cell": f"t={t},seed=0", "t": t, "seed": 0, "status": "done", "machine": "Zen 3"} for t in "ab"]
    drawn: list[Any] = []
    monkeypatch.setattr(report, "_save", lambda fig, folder, name: drawn.append(fig) or name)
    assert report.milestone_plot(tmp_path, rows, ["t"], tmp_path) == "milestones.png"
    ax = drawn[-1].axes[0]
    assert ax.get_xlabel() == "training minutes on Zen 3"
    assert [list(line.get_xdata()) for line in ax.get_lines()] == [[2.0, 4.0], [4.0, 8.0]]
    for r in rows:  # budgets stretched alike (--budget-scale 2): minutes of the spec's budget
        (tmp_path / r["cell"] / "config.yaml").write_text("train: {budget_scale: 2.0, time_budget: 4}\n")
    report.milestone_plot(tmp_path, rows, ["t"], tmp_path)
    ax = drawn[-1].axes[0]
    assert ax.get_xlabel() == "budget minutes (training minutes on Zen 3 / 2)"
    assert [list(line.get_xdata()) for line in ax.get_lines()] == [[1.0, 2.0], [2.0, 4.0]]
    (tmp_path / "t=b,seed=0" / "config.yaml").write_text("train: {budget_scale: 1.0}\n")  # two scales: wall minutes
    report.milestone_plot(tmp_path, rows, ["t"], tmp_path)
    assert drawn[-1].axes[0].get_xlabel() == "training minutes on Zen 3"
    rows[1]["machine"] = "Zen 5"  # minutes of two machines do not compare: steps instead
    report.milestone_plot(tmp_path, rows, ["t"], tmp_path)
    ax = drawn[-1].axes[0]
    assert ax.get_xlabel() == "step" and list(ax.get_lines()[1].get_xdata()) == [20, 40]
    for r in rows:
        (tmp_path / r["cell"] / "metrics.json").write_text("{}")
    assert report.milestone_plot(tmp_path, rows, ["t"], tmp_path) is None


def test_markdown_table_statistics() -> None:
    rows = [
        {"t": "a", "seed": 0, "status": "done", "knn_top1": 0.50, "linear_top1": 0.60, "final_loss": 1.0},
        {"t": "a", "seed": 1, "status": "done", "knn_top1": 0.54, "linear_top1": 0.62, "final_loss": 1.2},
        {"t": "b", "seed": 0, "status": "missing"},
    ]
    table = markdown_table(rows, ["t"])
    assert "| a | 2 | 52.0 ± 2.8 | 61.0 ± 1.4 | 1.100 ± 0.141 | - |" in table
    assert "1 cell(s) not finished" in table
    assert mean_std([3.0]) == (3.0, 0.0)
    assert "Best" not in table  # one grid point with two seeds: nothing to compare
    # The collapse signal gets its own column when runs logged it.
    rows[0]["embedding_std"], rows[1]["embedding_std"] = 0.10, 0.12
    table = markdown_table(rows, ["t"]).splitlines()
    assert table[0].endswith("| embedding std |") and table[2].endswith("| 0.1100 ± 0.0141 |")


def test_steps_and_speed_are_columns_when_cells_trained_different_steps() -> None:
    """Equal-time trials (time budgets) differ in steps: the table says how many and how fast."""
    base = {"status": "done", "knn_top1": 0.5, "linear_top1": 0.5, "final_loss": 1.0, "machine": "m"}
    rows = [
        {"t": "a", "seed": 0, **base, "steps": 400, "views_per_s": 880.0},
        {"t": "b", "seed": 0, **base, "steps": 700, "views_per_s": 740.0},
    ]
    table = markdown_table(rows, ["t"]).splitlines()
    assert "| steps | views/s |" in table[0]
    assert "| 400 | 880 |" in table[2] and "| 700 | 740 |" in table[3]  # one seed: no spread
    # Two machines: views/s do not compare, steps still do.
    rows[1]["machine"] = "other"
    head = markdown_table(rows, ["t"]).splitlines()[0]
    assert "| steps |" in head and "views/s" not in head and "wall time" not in head
    # The same steps everywhere (an epoch-based sweep at one batch size): no such columns.
    rows[1]["steps"] = 400
    assert "steps" not in markdown_table(rows, ["t"]).splitlines()[0]


def test_after_head_accuracy_is_a_column_when_a_cell_has_it(tmp_path: Path) -> None:
    from selfsup.lab.results import run_row

    run = tmp_path / "cell"
    run.mkdir()
    after = {"knn_top1": 0.30, "linear_top1": 0.35, "eval_time_s": 9.0}
    (run / "metrics.json").write_text(json.dumps({"knn_top1": 0.4, "linear_top1": 0.45, "after_head": after}))
    row = run_row(run)
    assert row["after_head_knn_top1"] == 0.30 and row["after_head_linear_top1"] == 0.35 and row["knn_top1"] == 0.4
    rows = [
        {"h": "mlp", "seed": 0, "status": "done", **row},
        {"h": "none", "seed": 0, "status": "done", "knn_top1": 0.2, "linear_top1": 0.25},
    ]
    table = markdown_table(rows, ["h"]).splitlines()
    assert table[0].startswith("| h | seeds | kNN top-1 (%) | linear top-1 (%) | kNN after the head (%) |")
    assert table[2].startswith("| mlp | 1 | 40.0 | 45.0 | 30.0 | 35.0 |")
    assert table[3].startswith("| none | 1 | 20.0 | 25.0 | - | - |")
    assert "after the head" not in markdown_table(rows[1:], ["h"])  # no cell has it: no column
    # Evaluated after the head on one seed of two: one value, not a mean with zero spread.
    rows.append({"h": "mlp", "seed": 1, "status": "done", "knn_top1": 0.42, "linear_top1": 0.45})
    table = markdown_table(rows, ["h"]).splitlines()
    assert table[2].startswith("| mlp | 2 | 41.0 ± 1.4 | 45.0 ± 0.0 | 30.0 (1 seed) | 35.0 (1 seed) |")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray of 2 workers, started once for the tests that use it (it takes seconds)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_launcher_writes_what_the_local_launcher_writes(
    shared_folder: Path, tmp_path: Path, local_ray: None
) -> None:
    spec = write_spec(tmp_path, shared_folder, seeds=[0])  # 2 cells
    local = run_sweep(spec, out=tmp_path / "local", log=lambda s: None)
    assert len(local.rows) == 2
    remote = run_sweep(
        spec, out=tmp_path / "ray", log=lambda s: None, options=SweepOptions(launcher="ray", cpus_per_cell=1)
    )
    # Finished cells are not run again; the table is collected from the run directories.
    again = run_sweep(spec, out=tmp_path / "ray", log=lambda s: None, options=SweepOptions(launcher="ray"))
    with open(tmp_path / "local" / "results.csv") as f:
        local_rows = list(csv.DictReader(f))
    with open(tmp_path / "ray" / "results.csv") as f:
        ray_rows = list(csv.DictReader(f))
    assert list(ray_rows[0]) == list(local_rows[0]) and len(ray_rows) == len(local_rows) == 2
    assert [r["cell"] for r in ray_rows] == [r["cell"] for r in local_rows]
    assert all(r["status"] == "done" for r in remote.rows) and again.table == remote.table
    # Same config, same seed, same data order: the same final loss on either launcher.
    for a, b in zip(local_rows, ray_rows):
        assert float(a["final_loss"]) == pytest.approx(float(b["final_loss"]), rel=1e-4)


@pytest.mark.slow
def test_ray_fine_tuning_cells_wait_for_their_shared_encoder(
    shared_folder: Path, tmp_path: Path, local_ray: None
) -> None:
    write_recipe(tmp_path / "tiny.yaml", shared_folder)
    spec = tmp_path / "ft.yaml"
    grid = {"finetune.batch_size": [4, 8]}  # two cells of one encoder and one label count
    overrides = {"finetune.epochs": 1, "finetune.val_size": 6, "finetune.labels": [6]}
    body = {"name": "ft", "command": "finetune", "encoder": {"base": "tiny.yaml"}, "grid": grid, "seeds": [0]}
    spec.write_text(yaml.safe_dump({**body, "overrides": overrides}))
    # Two workers: without the encoder's own task, both cells would pretrain it at once.
    result = run_sweep(
        spec, out=tmp_path / "s", log=lambda s: None, options=SweepOptions(launcher="ray", cpus_per_cell=1)
    )
    assert [r["status"] for r in result.rows] == ["done", "done"]
    trained = json.loads((tmp_path / "s" / "encoder,seed=0" / "machine.json").read_text())["entries"]
    assert [e["what"] for e in trained].count("train") == 1  # pretrained once, by its own task
    for batch in (4, 8):
        log = tmp_path / "s" / f"finetune.batch_size={batch},seed=0" / "finetune" / "labels-6"
        assert len(epoch_records(log)) == 1


def test_ray_launcher_without_ray_says_how_to_get_it(
    shared_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    spec = write_spec(tmp_path, shared_folder, seeds=[0])
    with pytest.raises(ConfigError, match=r"--launcher ray needs Ray: pip install 'selfsup\[ray\]'"):
        run_sweep(spec, out=tmp_path / "s", log=lambda s: None, options=SweepOptions(launcher="ray"))


def test_pair_heatmap_is_symmetric_and_the_spec_names_its_axis(tmp_path: Path) -> None:
    from selfsup.lab.report import heatmap, pair_matrix

    groups = [
        {"pair": "crop", "values": {"linear_top1": [0.40, 0.42]}},
        {"pair": "colour", "values": {"linear_top1": [0.30]}},
        {"pair": "crop+colour", "values": {"linear_top1": [0.50]}},
        {"pair": "blur", "values": {"linear_top1": []}},  # not run yet: blank
    ]
    names, grid = pair_matrix(groups, "pair", "linear_top1")
    assert names == ["crop", "colour", "blur"]
    assert grid[0, 0] == pytest.approx(41.0) and grid[1, 1] == pytest.approx(30.0)
    assert grid[0, 1] == grid[1, 0] == pytest.approx(50.0) and np.isnan(grid[2]).all()
    assert heatmap(groups, "pair", "linear_top1", tmp_path) == "heatmap_linear_top1.png"
    assert (tmp_path / "heatmap_linear_top1.png").is_file()
    spec = write_spec(tmp_path, tmp_path, heatmap="optimizer")
    with pytest.raises(ConfigError, match="heatmap must name a grid axis"):
        run_sweep(spec, out=tmp_path / "s", log=lambda s: None, options=SweepOptions(plan=True))


def test_x_axis_puts_a_later_axis_on_x_with_a_line_per_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """optimizer.yaml's figure: batch size on x, one line per optimizer (the grid's first axis)."""
    from selfsup.lab import report
    from selfsup.lab.results import write_csv

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    grid = {"optimizer": ["LARS", "Adam"], "train.batch_size": [64, 256]}
    (sweep / "sweep.yaml").write_text(yaml.safe_dump({"name": "o", "grid": grid, "x_axis": "train.batch_size"}))
    rows = [
        {
            "cell": f"optimizer={o},train.batch_size={b},seed=0",
            "optimizer": o,
            "train.batch_size": b,
            "seed": 0,
            "status": "done",
            "knn_top1": 0.4 + b / 10000 + (o == "LARS") / 100,
        }
        for o in ("LARS", "Adam")
        for b in (64, 256)
    ]
    write_csv(sweep / "results.csv", rows, list(grid))
    drawn: list[Any] = []
    monkeypatch.setattr(report, "_save", lambda fig, folder, name: drawn.append(fig) or name)
    report.report_sweep(sweep)
    ax = next(f.axes[0] for f in drawn if f.axes[0].get_xlabel() == "train.batch_size")
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["optimizer=Adam", "optimizer=LARS"]
    spec = write_spec(tmp_path, tmp_path, x_axis="optim.lr")
    with pytest.raises(ConfigError, match="x_axis must name a grid axis"):
        run_sweep(spec, out=tmp_path / "s", log=lambda s: None, options=SweepOptions(plan=True))
    grid2 = {"method.temperature": [0.1, 0.5], "train.batch_size": [64, 128]}
    reference = {"source": "paper", "metric": "knn_top1", "values": {0.1: 61}}
    spec = write_spec(tmp_path, tmp_path, grid=grid2, x_axis="train.batch_size", reference=reference)
    with pytest.raises(ConfigError, match="first grid axis when the spec has a reference"):
        run_sweep(spec, out=tmp_path / "s", log=lambda s: None, options=SweepOptions(plan=True))
    spec = write_spec(tmp_path, tmp_path, compare="optim.lr")
    with pytest.raises(ConfigError, match="compare must name a grid axis"):
        run_sweep(spec, out=tmp_path / "s", log=lambda s: None, options=SweepOptions(plan=True))


def test_separation_names_what_stands_out_of_seed_noise() -> None:
    from selfsup.lab.results import separation

    def rows(label: str, *values: float) -> list[dict[str, Any]]:
        return [{"m": label, "seed": i, "status": "done", "knn_top1": v} for i, v in enumerate(values)]

    data = rows("a", 0.50, 0.52) + rows("b", 0.40, 0.42) + rows("c", 0.49, 0.53) + rows("d", 0.30)
    note = separation(data, ["m"], "knn_top1")
    # a: 51 ± 1.4; b: 41 ± 1.4 (10 points, pooled std 1.4: separated); c: 51 ± 2.8 (within);
    # d has one seed and is left out.
    assert note == (
        "Best kNN top-1: a. Below it by more than two pooled seed std: b (-10.0); "
        "within two std (not separated): c (+0.0).\n"
        "Order of kNN top-1, best first ('>' where neighbours differ by more than two pooled seed std, "
        "'≈' where not): a ≈ c > b."
    )
    # Neighbours only: e 48 ± 1.4 sits between c and b, within two std of c (pooled 2.2), and
    # 7 points above b (pooled 1.4): separated.
    ranked = separation(data + rows("e", 0.47, 0.49), ["m"], "knn_top1").splitlines()[1]
    assert ranked.endswith(": a ≈ c ≈ e > b.")
    assert separation(rows("a", 0.5, 0.6), ["m"], "knn_top1") == ""
    # Two axes: the first compared within each value of the second.
    two = [{**r, "labels": 250} for r in rows("a", 0.50, 0.52) + rows("b", 0.40, 0.42)]
    two += [{**r, "labels": 4000} for r in rows("a", 0.60, 0.62) + rows("b", 0.61, 0.63)]
    assert separation(two, ["m", "labels"], "knn_top1").splitlines() == [
        "Best kNN top-1 at labels=250: a. Below it by more than two pooled seed std: b (-10.0).",
        "Best kNN top-1 at labels=4000: b. Below it by more than two pooled seed std: none; "
        "within two std (not separated): a (-1.0).",
    ]
    # Compared along the second axis instead (a spec's compare:): labels within each m.
    assert separation(two, ["labels", "m"], "knn_top1", along="m") == separation(two, ["m", "labels"], "knn_top1")
    assert separation(two, ["m", "labels"], "knn_top1", along="labels").splitlines()[0] == (
        "Best kNN top-1 at m=a: 4000. Below it by more than two pooled seed std: 250 (-10.0)."
    )


def test_a_report_on_a_folder_of_runs_compares_each_methods_signals(tmp_path: Path) -> None:
    from selfsup.config import load_config, save_config

    folder = tmp_path / "trials"
    for name, method, entropy in (("dino-a", "dino", 0.9), ("dino-b", "dino", 0.5), ("simclr-a", "simclr", None)):
        run = folder / name
        run.mkdir(parents=True)
        cfg = load_config(overrides={"method.name": method})
        save_config(cfg, run / "config.yaml")
        records = [{"step": s, "epoch": s / 10, "loss": 8.0 - s / 10, "lr": 0.1} for s in (10, 20)]
        for r in records:
            if entropy is not None:
                r["teacher_entropy"] = entropy
        records.append({"summary": True, "step": 20, "train_time_s": 60.0, "final_loss": 6.0})
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "notes").mkdir()  # not a run: ignored
    page = make_report(folder).read_text()
    assert "dino-a" in page and "simclr-a" in page and "2 runs" not in page and "3 runs" in page
    assert (folder / "report" / "runs_dino.png").is_file() and (folder / "report" / "runs_simclr.png").is_file()
    with pytest.raises(RunDirError, match="nor a folder of runs"):
        make_report(folder / "notes")


def test_aug_pairs_cells_apply_only_their_operations() -> None:
    """Every cell of the heat map: nothing but its own operations, on the first view only."""
    from selfsup.augment.presets import resolve_augment

    spec = load_spec(REPO / "configs" / "ablations" / "aug_pairs.yaml")
    for scale in (None, *spec.scale):
        for c in cells(spec, Path("x"), scale):
            aug = resolve_augment(spec.config({**c.overrides, "train.seed": c.seed}, scale).augment, "simclr")
            ops = set(c.dir.name.split(",")[0].removeprefix("pair=").split("+"))
            assert aug.preset == "none" and aug.second_view == "identity" and aug.flip_p == 0, c.dir.name
            assert (aug.crop == "resized") == ("crop" in ops), c.dir.name
            assert (aug.jitter_p > 0) == (aug.grayscale_p > 0) == ("colour" in ops), c.dir.name
            for key, op in (("rotate_p", "rotate"), ("blur_p", "blur"), ("sobel_p", "sobel"),
                            ("noise_p", "noise"), ("cutout", "cutout")):  # fmt: skip
                assert (getattr(aug, key) > 0) == (op in ops), f"{c.dir.name}: {key}"


def test_every_aug_pairs_operation_changes_the_first_view() -> None:
    """Each of the heat map's pairs changes what its operations alone leave unchanged.

    A configured operation can still do nothing (``crop: resized`` over preset none's
    ``crop_scale: [1, 1]`` cropped the whole image, so 'crop' cells trained on identical
    views); so each pair's first views must differ from those of the cell without it
    (its partner alone, or no augmentation for a single operation).
    """
    from dataclasses import replace

    from selfsup.augment import BatchAugment
    from selfsup.augment.presets import resolve_augment

    spec = load_spec(REPO / "configs" / "ablations" / "aug_pairs.yaml")
    by_label = {c.dir.name.split(",")[0].removeprefix("pair="): c for c in cells(spec, Path("x"), "cpu")}
    images = torch.randint(0, 256, (16, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    def views(label: str | None) -> torch.Tensor:
        overrides = by_label[label].overrides if label else {}
        aug = resolve_augment(spec.config({**overrides, "train.seed": 0}, "cpu").augment, "simclr")
        aug = replace(aug, mean=[0.5] * 3, std=[0.25] * 3)
        return BatchAugment(aug)(images, torch.Generator().manual_seed(0), 1)

    for label in by_label:
        ops, with_all = label.split("+"), views(label)
        for op in ops:
            rest = [o for o in ops if o != op]
            without = views(rest[0] if rest else None)
            assert not torch.allclose(with_all, without), f"{label}: {op} changes nothing"
