"""Committed records: machine.json, config comparison, sweeps that continue from a clone's cells."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO
from selfsup.config import apply_overrides, load_config
from selfsup.errors import ConfigError
from selfsup.lab import SweepOptions, run_sweep
from selfsup.lab.records import config_changes, describe, resolved
from selfsup.lab.results import markdown_table, provenance
from selfsup.machine import machine_info, read_machine, record_machine
from test_experiments import write_recipe


def test_machine_record_appends_one_entry_per_process(tmp_path: Path) -> None:
    info = machine_info()
    assert info["cores"] >= 1 and info["torch"] and info["label"].startswith(info["cpu"])
    assert info["isa"] in info["label"] and isinstance(info["bf16_native"], bool)
    record_machine(tmp_path, "train", 12.5, steps=[0, 10], bf16=False)
    record_machine(tmp_path, "eval", 3.0)
    entries = read_machine(tmp_path)
    assert [e["what"] for e in entries] == ["train", "eval"]
    assert entries[0]["steps"] == [0, 10] and entries[0]["seconds"] == 12.5 and entries[0]["label"] == info["label"]
    assert entries[1]["date"].endswith("UTC")
    (tmp_path / "machine.json").write_text("{torn")  # a damaged record reads as none, not a crash
    assert read_machine(tmp_path) == []


def test_config_changes_ignore_execution_keys_and_data_statistics() -> None:
    wanted = load_config(None, {"method.temperature": 0.2, "train.epochs": 3})
    saved = resolved(wanted)  # what a run writes: preset expanded ...
    saved.augment.mean, saved.augment.std = [0.5, 0.5, 0.5], [0.2, 0.2, 0.2]  # ... and statistics of its data
    saved = apply_overrides(saved, {"train.device": "cpu", "train.num_threads": 2, "train.progress": False})
    assert config_changes(saved, wanted) == {}
    changed = config_changes(saved, apply_overrides(wanted, {"train.epochs": 4}))
    assert changed == {"train.epochs": (3, 4)} and describe(changed) == "train.epochs 3 -> 4"
    # A preset value set by hand is a change too, though the recipe left it unset before.
    assert "augment.blur_p" in config_changes(saved, apply_overrides(wanted, {"augment.blur_p": 0.9}))


def test_config_changes_ignore_what_the_command_never_reads() -> None:
    pretrain = load_config(None, {"train.epochs": 3})
    other_semi = apply_overrides(pretrain, {"semi.rampup_epochs": 7.0, "semi.threshold": 0.5})
    other_ft = apply_overrides(pretrain, {"finetune.epochs": 5})
    # A pretrained encoder (or a record fine-tuned from it) is not retrained for the semi rows' settings ...
    assert config_changes(pretrain, other_semi, "pretrain") == {}
    assert config_changes(pretrain, other_semi, "finetune") == {}
    assert config_changes(pretrain, other_ft, "pretrain") == {}
    # ... but a fine-tuning cell reads finetune.*, a semi-supervised run semi.*, and semi.labels makes a run semi.
    assert config_changes(pretrain, other_ft, "finetune") == {"finetune.epochs": (50, 5)}
    semi = apply_overrides(pretrain, {"semi.labels": 250})
    semi = apply_overrides(
        semi, {"method.name": "pi"}
    )  # the ramp-up is the Pi-model's own setting (its old name works)
    assert "method.rampup_epochs" in config_changes(semi, apply_overrides(semi, {"semi.rampup_epochs": 7.0}), "semi")
    assert "semi.labels" in config_changes(pretrain, semi, "pretrain")
    # Without a command every key counts, but another method's settings are no key of SimCLR's run.
    assert config_changes(pretrain, other_semi) == {} and config_changes(pretrain, other_ft) != {}


def _row(machine: str, knn: float, wall: float, seed: int) -> dict[str, Any]:
    return {
        "t": "a",
        "seed": seed,
        "status": "done",
        "knn_top1": knn,
        "linear_top1": knn,
        "final_loss": 1.0,
        "wall_time_s": wall,
        "machine": machine,
        "precision": "bf16",
        "date": f"2026-12-0{seed + 1}",
    }


def test_tables_do_not_average_wall_times_across_machines() -> None:
    one = [_row("m1", 0.5, 100, 0), _row("m1", 0.52, 110, 1)]
    table = markdown_table(one, ["t"])
    assert "wall time (s)" in table and "105 ± 7" in table
    assert "Measured 2026-12-01 to 2026-12-02 on m1 (2 cells); precision bf16." in table
    two = [_row("m1", 0.5, 100, 0), _row("m2", 0.52, 30, 1)]
    table = markdown_table(two, ["t"])
    assert "wall time" not in table.splitlines()[0] and "51.0 ± 1.4" in table
    assert "m1 (1 cells); m2 (1 cells)" in table and "not averaged across machines" in table
    assert provenance([{"status": "missing"}]) == ""


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"})  # fmt: skip


def _spec(repo: Path, data: Path, b_temperature: float) -> Path:
    write_recipe(repo / "tiny.yaml", data)
    spec = {
        "name": "tiny",
        "base": "tiny.yaml",
        "grid": {"t": [{"label": "a", "method.temperature": 0.1}, {"label": "b", "method.temperature": b_temperature}]},
        "seeds": [0, 1],
        "scale": {"small": {"train.epochs": 1}},
    }
    (repo / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return repo / "spec.yaml"


def test_committed_sweep_continues_in_a_clone_and_reruns_changed_cells(shared_folder: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / ".gitignore", repo / ".gitignore")  # the project's rules: records in, checkpoints out
    spec = _spec(repo, shared_folder, 0.5)
    out = Path("results") / "tiny"
    # Day one: two of four cells finish, then the machine is gone; their records are committed.
    for cell in ("t=a,seed=0", "t=b,seed=1"):
        run_sweep(spec, out=repo / out, log=lambda _m: None, options=SweepOptions(scale="small", only=cell))
    _git("init", "-q", cwd=repo)
    _git("add", "-A", cwd=repo)
    _git("commit", "-qm", "two cells", cwd=repo)
    clone = tmp_path / "clone"
    _git("clone", "-q", str(repo), str(clone), cwd=tmp_path)
    record = clone / out / "t=a,seed=0"
    assert {p.name for p in record.iterdir()} == {"config.yaml", "metrics.json", "metrics.jsonl", "machine.json"}
    assert json.loads((record / "machine.json").read_text())["entries"][0]["what"] == "train"
    committed = {p: p.read_bytes() for p in (clone / out).glob("*/metrics.json")}

    # Day two, another machine: only the two missing cells run.
    lines: list[str] = []
    result = run_sweep(clone / "spec.yaml", out=clone / out, log=lines.append, options=SweepOptions(scale="small"))
    assert "4 cells, 2 done, 2 to run" in lines[0]
    assert all(p.read_bytes() == data for p, data in committed.items())  # the committed cells were not redone
    assert [r["status"] for r in result.rows] == ["done"] * 4 and "machine" in result.rows[0]
    assert (clone / out / "table.md").read_text().strip() == result.table

    # The spec changes one grid value: its two cells run again, and the sweep says why.
    before = (clone / out / "t=a,seed=0" / "metrics.json").read_bytes()
    _spec(clone, shared_folder, 0.7)
    lines.clear()
    run_sweep(clone / "spec.yaml", out=clone / out, log=lines.append, options=SweepOptions(scale="small"))
    reruns = [line for line in lines if "config changed" in line]
    assert len(reruns) == 2 and all("method.temperature 0.5 -> 0.7" in line for line in reruns)
    assert any("4 cells, 2 done, 2 to run" in line for line in lines)
    assert (clone / out / "t=a,seed=0" / "metrics.json").read_bytes() == before
    saved = yaml.safe_load((clone / out / "t=b,seed=0" / "config.yaml").read_text())
    assert saved["method"]["temperature"] == 0.7


def test_reuse_copies_cells_whose_config_another_sweep_finished(shared_folder: Path, tmp_path: Path) -> None:
    first = tmp_path / "first"
    first.mkdir()
    spec = _spec(first, shared_folder, 0.5)
    run_sweep(spec, out=first / "sweep", log=lambda _m: None, options=SweepOptions(scale="small", only="t=b,seed=0"))
    # A second sweep whose 'c' cells ask for exactly what the first sweep's 'b' cells ran.
    second = tmp_path / "second"
    second.mkdir()
    write_recipe(second / "tiny.yaml", shared_folder)
    grid = {"t": [{"label": "c", "method.temperature": 0.5}, {"label": "d", "method.temperature": 0.7}]}
    (second / "spec.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "other",
                "base": "tiny.yaml",
                "grid": grid,
                "seeds": [0, 1],
                "scale": {"small": {"train.epochs": 1}},
            }
        )
    )
    lines: list[str] = []
    kept = run_sweep(
        second / "spec.yaml",
        out=second / "sweep",
        log=lines.append,
        options=SweepOptions(scale="small", only="t=c,seed=1", reuse=[first / "sweep"]),
    )
    assert not any("copied" in line for line in lines)  # seed 1 of 'b' never ran: nothing to copy
    assert [r["status"] for r in kept.rows] == ["missing", "done", "missing", "missing"]
    lines.clear()
    result = run_sweep(
        second / "spec.yaml",
        out=second / "sweep",
        log=lines.append,
        options=SweepOptions(scale="small", only="t=c,seed=0", reuse=[first / "sweep"]),
    )
    copied = [line for line in lines if "copied, not run again" in line]
    assert len(copied) == 1 and copied[0].startswith("cell t=c,seed=0: the same config finished in ")
    assert "4 cells, 2 done, 0 to run (--cell t=c,seed=0)" in " ".join(lines)  # nothing trained
    source = first / "sweep" / "t=b,seed=0"
    target = second / "sweep" / "t=c,seed=0"
    assert (target / "metrics.json").read_bytes() == (source / "metrics.json").read_bytes()
    assert not (target / ".lock").exists() and [r["status"] for r in result.rows][:2] == ["done", "done"]
    with pytest.raises(ConfigError, match="--reuse .*nowhere: no such folder"):
        run_sweep(
            second / "spec.yaml",
            out=second / "sweep",
            options=SweepOptions(scale="small", reuse=[tmp_path / "nowhere"]),
        )


def _make_bf16(run: Path) -> None:
    """Rewrite a finished run's records as if it had trained in bf16."""
    for name in ("metrics.jsonl", "machine.json"):
        path = run / name
        path.write_text(path.read_text().replace('"bf16": false', '"bf16": true'))


def test_a_continued_sweep_keeps_the_precision_of_its_finished_cells(
    shared_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import selfsup.runtime

    spec = _spec(tmp_path, shared_folder, 0.5)
    out = tmp_path / "sweep"
    lines: list[str] = []
    monkeypatch.setattr(selfsup.runtime, "native_bf16", lambda _device: False)  # an fp32 machine
    run_sweep(spec, out=out, log=lambda _m: None, options=SweepOptions(scale="small", only="t=a,seed=0"))
    # The table continues on a machine where 'auto' means bf16: its cells stay fp32.
    monkeypatch.setattr(selfsup.runtime, "native_bf16", lambda _device: True)
    result = run_sweep(spec, out=out, log=lines.append, options=SweepOptions(scale="small", only="t=b,seed=0"))
    assert any("the rest run in fp32 too (here 'auto' would be bf16)" in line for line in lines)
    assert [r.get("precision") for r in result.rows if r["status"] == "done"] == ["fp32", "fp32"]
    with pytest.raises(ConfigError, match="ran in fp32; --precision bf16 would mix precisions"):
        run_sweep(
            spec, out=out, log=lambda _m: None, options=SweepOptions(scale="small", only="t=a,seed=1", precision="bf16")
        )
    # A bf16 table does not go on, ten times slower, on a machine that only emulates bf16.
    monkeypatch.setattr(selfsup.runtime, "native_bf16", lambda _device: False)
    _make_bf16(out / "t=a,seed=0")
    _make_bf16(out / "t=b,seed=0")
    with pytest.raises(ConfigError, match="ran in bf16, which this machine only emulates"):
        run_sweep(spec, out=out, log=lambda _m: None, options=SweepOptions(scale="small", only="t=a,seed=1"))
    # Nothing left to run: the table is written on any machine.
    assert run_sweep(spec, out=out, log=lambda _m: None, options=SweepOptions(scale="small", only="t=a,seed=0")).rows


def test_a_budget_scale_stretches_the_cells_still_to_run_and_keeps_the_finished(
    shared_folder: Path, tmp_path: Path
) -> None:
    spec = _spec(tmp_path, shared_folder, 0.5)
    out = tmp_path / "sweep"
    # Without a time budget there is nothing to scale: one line, not a run.
    with pytest.raises(ConfigError, match="--budget-scale 2: no cell to run has a train.time_budget"):
        run_sweep(spec, out=out, log=lambda _m: None, options=SweepOptions(scale="small", budget_scale=2.0))
    raw = yaml.safe_load(spec.read_text())
    raw["scale"]["small"] = {"train.time_budget": 0.005, "train.replan": False}
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError, match="must be positive"):
        run_sweep(spec, out=out, log=lambda _m: None, options=SweepOptions(scale="small", budget_scale=0.0))
    # A slower machine trains the cell 1.5 times the spec's minutes; the record says so.
    run_sweep(
        spec, out=out, log=lambda _m: None, options=SweepOptions(scale="small", only="t=a,seed=0", budget_scale=1.5)
    )
    cell = out / "t=a,seed=0"
    assert load_config(cell / "config.yaml").train.budget_scale == 1.5
    assert json.loads((cell / "plan.json").read_text())["time_budget_min"] == pytest.approx(0.0075)
    # Continued without the flag (another machine, the spec's own minutes), the finished cell stands.
    lines: list[str] = []
    run_sweep(spec, out=out, log=lines.append, options=SweepOptions(scale="small", only="t=a,seed=0"))
    assert "0 to run (--cell t=a,seed=0)" in " ".join(lines)
