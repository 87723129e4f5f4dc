"""The benchmark scripts run end to end on the CPU (tiny sizes), so device time goes to measuring."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, subprocess_env


@pytest.mark.slow
def test_gpu_check_smoke(shared_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--smoke", "--out", str(out),
           "--data", str(shared_folder)]
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
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
    table = (out / "table.md").read_text()
    assert "| preact_resnet26 | False | selfsup |" in table and "configs/simclr_resnet18.yaml" in table
    assert table.strip() in done.stdout
