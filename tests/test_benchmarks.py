"""The benchmark scripts run end to end on the CPU (tiny sizes), so device time goes to measuring."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, subprocess_env


def smoke(script: str, out: Path, data: Path) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/SCRIPT --smoke`` on the tiny folder; it must succeed."""
    cmd = [sys.executable, str(REPO / "benchmarks" / script), "--smoke", "--out", str(out), "--data", str(data)]
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.slow
def test_gpu_check_smoke(shared_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    done = smoke("gpu_check.py", out, shared_folder)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert not [r for r in records if "error" in r], [r for r in records if "error" in r]
    assert records[0]["part"] == "env"
    rows = [r for r in records if r["part"] == "throughput" and "views_per_s" in r]
    measured = {(r["backbone"], r["pipeline"], r["compile"]) for r in rows}
    for backbone in ("preact_resnet26", "resnet18"):
        for pipeline in ("bare", "selfsup", "seed_style"):
            assert (backbone, pipeline, False) in measured
        for pipeline in ("bare", "selfsup"):
            assert (backbone, pipeline, True) in measured
    assert all(r["views_per_s"] > 0 and r["batch"] == 8 for r in rows)
    # lightly is measured where installed, and otherwise says why not.
    lightly = [r for r in records if r.get("pipeline") == "lightly"]
    assert len(lightly) == 2 and all("views_per_s" in r or "skipped" in r for r in lightly)
    recipes = [r for r in records if r["part"] == "recipe"]
    assert [r["recipe"] for r in recipes] == ["configs/seed000_simclr.yaml", "configs/simclr_resnet18.yaml"]
    for r in recipes:
        assert r["epochs"] >= 1 and r["s_per_epoch"] > 0
        assert 0 <= r["knn_top1"] <= 1 and 0 <= r["linear_top1"] <= 1
        assert r["full_recipe_minutes"] == pytest.approx(r["full_recipe_epochs"] * r["s_per_epoch"] / 60)
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["resnet18", "seed000"]
    assert json.loads((out / "machine.json").read_text())["entries"][0]["what"] == "benchmark"
    table = (out / "table.md").read_text()
    assert "| preact_resnet26 | False | selfsup |" in table and "configs/simclr_resnet18.yaml" in table
    assert table.strip() in done.stdout


def test_gpu_check_rejects_an_unknown_pipeline(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "gpu_check.py"),
        "--out",
        str(tmp_path),
        "--pipelines",
        "bare,nope",
    ]
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "unknown pipelines ['nope']" in done.stderr


def test_augment_speed_smoke(shared_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "aug"
    done = smoke("augment_speed.py", out, shared_folder)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["what"] for r in records] == [
        "whole augmentation, per-op path",
        "whole augmentation, fixed path",
        "colour jitter, grouped",
        "colour jitter, rounds",
    ]
    assert all(r["ms"] > 0 and r["views"] == 16 and r["device"] == "cpu" for r in records)
    assert json.loads((out / "machine.json").read_text())["entries"][0]["what"] == "benchmark"
    assert "grouped / rounds" in (out / "table.md").read_text() and "grouped / rounds" in done.stdout


@pytest.mark.slow
def test_time_to_accuracy_smoke(shared_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "tta"
    smoke("time_to_accuracy.py", out, shared_folder)
    points = [json.loads(line) for line in (out / "points.jsonl").read_text().splitlines()]
    by: dict[str, list[dict]] = {}
    for p in points:
        by.setdefault(p["pipeline"], []).append(p)
    assert set(by) == {"selfsup", "lightly", "lightly_tuned"}
    for name, pts in by.items():
        if "skipped" in pts[0]:  # lightly is an optional extra
            assert name != "selfsup"
            continue
        minutes = [p["train_min"] for p in pts]
        assert minutes == sorted(minutes) and all(0 <= p["knn_top1"] <= 1 and p["eval_s"] >= 0 for p in pts)
        assert "linear_top1" in pts[-1] and all("linear_top1" not in p for p in pts[:-1])
    assert (out / "curves.png").stat().st_size > 0
    table = (out / "table.md").read_text()
    assert table.startswith("| pipeline | min to 45 % |") and "| selfsup |" in table


def test_minutes_to_a_threshold_the_lead_and_the_marks() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from selfsup.lab.time_to_accuracy import lead, minutes_to
    from time_to_accuracy import _marks

    pts = [
        {"train_min": 2.0, "knn_top1": 0.44},
        {"train_min": 4.5, "knn_top1": 0.51},
        {"train_min": 7.0, "knn_top1": 0.5},
    ]
    assert minutes_to(pts, 45) == 4.5 and minutes_to(pts, 50) == 4.5 and minutes_to(pts, 55) is None
    # selfsup's best within the other's minutes (4.5 of 5), against the other's last point.
    other = [{"train_min": 5.0, "knn_top1": 0.4}]
    assert lead({"selfsup": pts, "lightly": other}, 5.0) == {"lightly": pytest.approx(11.0)}
    assert lead({"lightly": other}, 5.0) == {}
    # Epoch ends at 1.4, 2.8, ... minutes, a snapshot every 2.5: the first past 2.5, 5, 7.5, and the last.
    ends = [(1.4 * i, i) for i in range(1, 8)]
    assert [k for _, k in _marks(ends, 2.5)] == [2, 4, 6, 7]
    # ... and the last end within the other pipelines' 8 minutes (5 at 7.0), where the lead is taken.
    assert [k for _, k in _marks(ends, 2.5, also=8.0)] == [2, 4, 5, 6, 7]
    assert [k for _, k in _marks(ends, 2.5, also=6.5)] == [2, 4, 6, 7]  # 4 at 5.6 is chosen already
    assert [k for _, k in _marks(ends, 2.5, also=5.0)] == [2, 3, 4, 6, 7]


def test_throughput_labels_each_recipe_and_measures_them_in_turns() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from pretrain_throughput import run_labels

    assert run_labels(["bare", "selfsup"], []) == [("bare", None, "bare"), ("selfsup", None, "selfsup")]
    assert run_labels(["bare"], ["configs/quick.yaml"]) == [("bare", "configs/quick.yaml", "bare")]
    two = run_labels(["bare", "selfsup"], ["configs/quick.yaml", "configs/seed000_simclr.yaml"])
    assert [label for *_, label in two] == [
        "bare@quick",
        "selfsup@quick",
        "bare@seed000_simclr",
        "selfsup@seed000_simclr",
    ]
    with pytest.raises(SystemExit, match="share a file name"):
        run_labels(["bare"], ["a/quick.yaml", "b/quick.yaml"])


def test_data_load_smoke(shared_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    done = smoke("data_load.py", out, shared_folder)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["decode", "cached"]
    assert all(r["seconds"] > 0 and r["train"] + r["test"] == len(list(shared_folder.rglob("*.png"))) for r in records)
    table = (out / "table.md").read_text()
    assert "| cached |" in table and "decode / cached:" in table and table.strip() in done.stdout
    entries = json.loads((out / "machine.json").read_text())["entries"]
    assert entries[-1]["what"] == "benchmark" and "data_load.py" in entries[-1]["command"]


def test_parallel_cells_times_one_process_and_several_in_turns(tmp_path: Path) -> None:
    out = tmp_path / "par"
    cmd = [sys.executable, str(REPO / "benchmarks" / "parallel_cells.py"), "--batch", "4", "--steps", "1"]
    cmd += ["--warmup", "0", "--rounds", "1", "--threads", "2", "--parallel", "2", "--out", str(out)]
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["processes"], r["threads_each"]) for r in records] == [(1, 2), (2, 1)]
    assert len(records[1]["each_views_per_s"]) == 2
    assert records[1]["views_per_s"] == pytest.approx(sum(records[1]["each_views_per_s"]))
    table = (out / "table.md").read_text()
    assert "| 1 x 2 threads |" in table and "| 2 x 1 threads |" in table and "| 1.00 |" in table
    entries = json.loads((out / "machine.json").read_text())["entries"]
    assert entries[-1]["what"] == "benchmark" and "parallel_cells.py" in entries[-1]["command"]


def test_parallel_cells_refuses_a_split_that_does_not_divide_the_threads() -> None:
    cmd = [sys.executable, str(REPO / "benchmarks" / "parallel_cells.py"), "--threads", "3", "--parallel", "2"]
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "must be at least 2 and divide" in done.stderr
    assert "Traceback" not in done.stderr


def test_parallel_cells_reports_a_failed_timing_process_in_one_line() -> None:
    cmd = [sys.executable, str(REPO / "benchmarks" / "parallel_cells.py"), "--pipeline", "no-such-pipeline"]
    cmd += ["--threads", "2", "--rounds", "1"]
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "a timing process failed" in done.stderr
    assert "Traceback" not in done.stderr.splitlines()[-1]
