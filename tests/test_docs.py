"""Docs from data: the generated blocks of README.md and docs/ equal what results/ gives."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import REPO
from selfsup.config import load_config, save_config
from selfsup.errors import ConfigError
from selfsup.lab.docs import BLOCK, Difference, doc_files, update_docs
from selfsup.lab.docs import main as docs_main
from selfsup.machine import record_machine


def test_docs_match_the_committed_results() -> None:
    differences = update_docs(REPO, check=True)
    assert differences == [], "run 'python -m selfsup.lab.docs' and commit: " + ", ".join(
        f"{d.file.name} {d.kind} {d.name}" for d in differences
    )
    blocks = [m for p in doc_files(REPO) for m in BLOCK.finditer(p.read_text())]
    assert any(m.group(2) == "run" and m.group(3) == "main-job-cpu" for m in blocks)
    assert any(m.group(2) == "table" for m in blocks)


def test_relative_links_in_the_docs_resolve() -> None:
    missing = []
    for path in doc_files(REPO):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" not in target and not (path.parent / target).exists():
                missing.append(f"{path.relative_to(REPO)} -> {target}")
    assert missing == []


def test_a_figure_blocks_difference_names_its_folder_without_the_option() -> None:
    d = Difference(Path("docs/methods.md"), "figure", "methods-cpu-time,milestones")
    assert d.folder == "methods-cpu-time"
    assert Difference(Path("README.md"), "run", "main-job-cpu").folder == "main-job-cpu"


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "docs", root / "docs")
    shutil.copy(REPO / "README.md", root / "README.md")
    shutil.copytree(REPO / "results", root / "results", ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    return root


def test_a_planted_difference_fails_the_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(tmp_path)
    readme = root / "README.md"
    text = readme.read_text()
    block = next(m for m in BLOCK.finditer(text) if m.group(3) == "main-job-cpu")
    planted = block.group(4).replace("kNN top-1 0.", "kNN top-1 9.", 1)
    assert planted != block.group(4)
    readme.write_text(text.replace(block.group(4), planted))
    assert docs_main(["--check", "--root", str(root)]) == 1
    assert "README.md: block 'run main-job-cpu' differs from results/main-job-cpu" in capsys.readouterr().out
    assert readme.read_text() != text  # --check changed nothing ...
    assert docs_main(["--root", str(root)]) == 0  # ... regenerating puts the records' figure back
    assert readme.read_text() == text and update_docs(root, check=True) == []
    capsys.readouterr()
    assert docs_main(["--check", "--root", str(root)]) == 0
    assert capsys.readouterr().out.strip() == "every results block matches its records"
    # Outside a repository there is nothing to check: one line, not a silent pass.
    assert docs_main(["--check", "--root", str(tmp_path / "empty")]) == 2
    assert "no README.md or docs/*.md under" in capsys.readouterr().err

    # A record changed without regenerating the docs fails too.
    metrics = root / "results" / "main-job-cpu" / "metrics.json"
    values = json.loads(metrics.read_text())
    values["linear_top1"] += 0.01
    metrics.write_text(json.dumps(values))
    assert [(d.file.name, d.name) for d in update_docs(root, check=True)] == [("README.md", "main-job-cpu")]


def test_block_kinds_from_synthetic_records(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    run = root / "results" / "trials" / "budget-10"
    run.mkdir(parents=True)
    save_config(load_config(), run / "config.yaml")
    summary = {"summary": True, "step": 390, "epochs": 2, "train_time_s": 600.0, "views_per_s": 300.0,
               "final_loss": 4.5, "bf16": True}  # fmt: skip
    (run / "metrics.jsonl").write_text(json.dumps(summary) + "\n")
    milestones = {"195": {"epoch": 1, "step": 195, "knn_top1": 0.45, "linear_top1": 0.47},
                  "390": {"epoch": 2, "step": 390, "knn_top1": 0.5, "linear_top1": 0.52}}  # fmt: skip
    (run / "metrics.json").write_text(json.dumps({"knn_top1": 0.5, "linear_top1": 0.52, "milestones": milestones}))
    record_machine(run, "train", 600.0, steps=[0, 390], bf16=True)
    (root / "docs").mkdir()
    page = root / "docs" / "page.md"
    page.write_text(
        "# Trials\n\n<!-- results runs trials -->\nstale\n<!-- /results -->\n\n"
        "<!-- results milestones trials/budget-10 -->\n<!-- /results -->\n"
    )
    assert len(update_docs(root)) == 2
    text = page.read_text()
    assert "| budget-10 | 50.0 | 52.0 | 4.500 | - | 390 | 10.0 |" in text and "| bf16 |" in text
    assert "| 1 | 195 | 45.0 | 47.0 |" in text and "| 2 | 390 | 50.0 | 52.0 |" in text
    assert update_docs(root, check=True) == []
    # A run still training (no summary record yet) is named, not shown with its live numbers.
    live = root / "results" / "trials" / "budget-20"
    live.mkdir()
    save_config(load_config(), live / "config.yaml")
    (live / "metrics.jsonl").write_text(json.dumps({"step": 50, "loss": 6.0, "embedding_std": 0.01}) + "\n")
    update_docs(root)
    text = page.read_text()
    assert "| budget-20 |" not in text and "Not finished (left out): budget-20." in text
    shutil.rmtree(live)
    update_docs(root)
    # Checkpoints evaluated one by one (selfsup eval RUN --step N), with their training minutes.
    steps = {"100": {"checkpoint_step": 100, "knn_top1": 0.40, "linear_top1": 0.42}}
    (run / "metrics.json").write_text(json.dumps({"milestones": milestones, "steps": steps}))
    timed = [{"step": 100, "train_time_s": 150.0}, {"step": 195, "train_time_s": 300.0}, summary]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in timed))
    page.write_text("<!-- results checkpoints trials/budget-10 -->\n<!-- /results -->\n")
    update_docs(root)
    rows = [line for line in page.read_text().splitlines() if line.startswith("| 1") or line.startswith("| 3")]
    assert rows == ["| 100 | 2.5 | 40.0 | 42.0 |", "| 195 | 5.0 | 45.0 | 47.0 |", "| 390 | 10.0 | 50.0 | 52.0 |"]
    page.write_text("<!-- results nosuch trials -->\n<!-- /results -->\n")
    with pytest.raises(ConfigError, match="unknown results block kind 'nosuch'"):
        update_docs(root, check=True)
    page.write_text("<!-- results table missing-folder -->\n<!-- /results -->\n")
    with pytest.raises(ConfigError, match="does not exist"):
        update_docs(root, check=True)


def test_a_finetunes_block_averages_each_trials_seeds(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    settings = {"epochs": 30, "lr": 0.05, "encoder_lr": 0.25, "head_epochs": 0, "freeze_encoder": False, "seed": 0}
    for seed, top1, best in ((0, 0.50, 12), (1, 0.54, 30)):
        run = root / "results" / "ft-trials" / f"lr0.05,seed={seed}"
        run.mkdir(parents=True)
        result = {"test_top1": top1, "best_epoch": best, "epochs": 30, "time_s": 40.0 + seed, "settings": settings}
        (run / "metrics.json").write_text(json.dumps({"finetune": {"250": result}}))
        record_machine(run, "finetune", 40.0, labels=250, bf16=False)
    other = root / "results" / "ft-trials" / "scratch,seed=0"
    other.mkdir()
    result = {"test_top1": 0.3, "best_epoch": 5, "epochs": 30, "time_s": 20.0}  # a record without settings
    (other / "metrics.json").write_text(json.dumps({"finetune_random_init": {"1000": result}}))
    (root / "docs").mkdir()
    page = root / "docs" / "page.md"
    page.write_text("<!-- results finetunes ft-trials -->\n<!-- /results -->\n")
    update_docs(root)
    rows = [line for line in page.read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows == [
        "| lr0.05 | 250 | pretrained | 2 | 30 | 0.05 | 0.25 | 0 | no | 12/30 | 52.0 ± 2.8 | 40 |",
        "| scratch | 1000 | random | 1 | 30 | - | - | - | no | 5 | 30.0 | 20 |",
    ]
    assert "(fp32)" in page.read_text() and update_docs(root, check=True) == []
    shutil.rmtree(root / "results" / "ft-trials")
    (root / "results" / "ft-trials").mkdir()
    with pytest.raises(ConfigError, match="no fine-tuning results"):
        update_docs(root, check=True)


def test_a_time_to_accuracy_block_from_its_points(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    folder = root / "results" / "tta"
    folder.mkdir(parents=True)
    points = [
        {"pipeline": "selfsup", "train_min": 2.5, "step": 300, "knn_top1": 0.46, "eval_s": 20.0},
        {"pipeline": "selfsup", "train_min": 5.1, "step": 600, "knn_top1": 0.56, "linear_top1": 0.58, "eval_s": 80.0},
        {"pipeline": "lightly", "train_min": 5.0, "step": 400, "knn_top1": 0.44, "linear_top1": 0.47, "eval_s": 70.0},
        {"pipeline": "lightly_tuned", "skipped": "No module named 'lightly'"},
    ]
    (folder / "points.jsonl").write_text("".join(json.dumps(p) + "\n" for p in points))
    record_machine(folder, "benchmark", 900.0, bf16=True)
    (root / "docs").mkdir()
    page = root / "docs" / "speed.md"
    page.write_text("<!-- results tta tta -->\n<!-- /results -->\n")
    assert len(update_docs(root)) == 1
    text = page.read_text()
    assert "| selfsup | 2.5 | 5.1 | 5.1 | - | - | 5.1 | 56.0 | 58.0 | 100 |" in text
    assert "| lightly | - | - | - | - | - | 5.0 | 44.0 | 47.0 | 70 |" in text and "lightly_tuned" not in text
    assert "(bf16)." in text and update_docs(root, check=True) == []


def test_a_bench_block_from_a_benchmark_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "repo"
    folder = root / "results" / "load"
    (root / "docs").mkdir(parents=True)
    page = root / "docs" / "speed.md"
    page.write_text("<!-- results bench load -->\n<!-- /results -->\n")
    folder.mkdir(parents=True)
    (folder / "table.md").write_text("| load | seconds |\n|---|---:|\n| cached | 0.24 |\n")
    with pytest.raises(ConfigError, match="no benchmark entry"):
        update_docs(root, check=True)
    monkeypatch.setattr("sys.argv", ["benchmarks/data_load.py", "--out", "results/load"])
    record_machine(folder, "benchmark", 75.0)
    assert len(update_docs(root)) == 1
    text = page.read_text()
    assert "| cached | 0.24 |" in text and "`python benchmarks/data_load.py --out results/load`; measured " in text
    assert update_docs(root, check=True) == []
    (folder / "table.md").write_text("| load | seconds |\n|---|---:|\n| cached | 0.31 |\n")
    assert len(update_docs(root, check=True)) == 1  # a rerun's table is a difference to regenerate


def _page_over_heads_cpu(tmp_path: Path) -> tuple[Path, Path]:
    """A repository root holding a copy of results/heads-cpu's records, and a page under its docs/."""
    root = tmp_path / "repo"
    shutil.copytree(
        REPO / "results" / "heads-cpu",
        root / "results" / "heads-cpu",
        ignore=shutil.ignore_patterns("checkpoints", "tensorboard", "*.png", "report*"),
    )
    (root / "docs").mkdir()
    return root, root / "docs" / "page.md"


def test_a_milestones_figure_block_draws_each_cells_curve_and_checks_its_numbers(tmp_path: Path) -> None:
    """``figure NAME,milestones``: the equal-time curves, redrawn when a milestone's accuracy changes."""
    root, page = _page_over_heads_cpu(tmp_path)
    page.write_text("<!-- results figure heads-cpu,milestones -->\n<!-- /results -->\n")
    with pytest.raises(ConfigError, match="nothing to draw for milestones"):  # none evaluated yet
        update_docs(root)
    metrics = next(p for p in sorted((root / "results" / "heads-cpu").glob("*/metrics.json")))
    values = json.loads(metrics.read_text())
    values["milestones"] = {str(s): {"step": s, "knn_top1": 0.3 + s / 10000} for s in (100, 200)}
    metrics.write_text(json.dumps(values))
    assert len(update_docs(root)) == 1
    image = root / "docs" / "figures" / "heads-cpu-milestones.png"
    assert image.read_bytes()[:4] == b"\x89PNG" and "](figures/heads-cpu-milestones.png)" in page.read_text()
    assert update_docs(root, check=True) == []
    values["milestones"]["200"]["knn_top1"] = 0.5
    metrics.write_text(json.dumps(values))
    assert [d.kind for d in update_docs(root, check=True)] == ["figure"]


def test_a_spec_recorded_from_another_checkout_is_named_as_in_this_one(tmp_path: Path) -> None:
    from selfsup.lab.docs import _spec_in_root

    root = tmp_path / "repo"
    (root / "configs" / "ablations").mkdir(parents=True)
    (root / "configs" / "ablations" / "heads.yaml").write_text("name: heads\n")
    elsewhere = tmp_path / "measure" / "configs" / "ablations" / "heads.yaml"  # a worktree's path
    assert _spec_in_root(elsewhere, root) == Path("configs/ablations/heads.yaml")
    assert _spec_in_root(root / "configs" / "ablations" / "heads.yaml", root) == Path("configs/ablations/heads.yaml")
    assert _spec_in_root(tmp_path / "other" / "mine.yaml", root) == Path("mine.yaml")
    assert _spec_in_root(Path("configs/x.yaml"), root) == Path("configs/x.yaml")


def test_a_figure_block_draws_the_sweeps_records_and_fails_the_check_when_they_change(tmp_path: Path) -> None:
    root, page = _page_over_heads_cpu(tmp_path)
    page.write_text("<!-- results figure heads-cpu -->\n<!-- /results -->\n")
    assert len(update_docs(root)) == 1
    image = root / "docs" / "figures" / "heads-cpu-knn_top1.png"
    assert image.read_bytes()[:4] == b"\x89PNG"
    text = page.read_text()
    assert "](figures/heads-cpu-knn_top1.png)" in text and "from results/heads-cpu" in text
    assert update_docs(root, check=True) == []
    drawn = image.stat().st_mtime_ns
    assert update_docs(root) == [] and image.stat().st_mtime_ns == drawn  # unchanged numbers: not redrawn
    # A record changed without redrawing fails the check; so does a missing image.
    metrics = next(p for p in sorted((root / "results" / "heads-cpu").glob("*/metrics.json")))
    values = json.loads(metrics.read_text())
    values["knn_top1"] += 0.01
    metrics.write_text(json.dumps(values))
    assert [d.kind for d in update_docs(root, check=True)] == ["figure"]
    assert len(update_docs(root)) == 1 and update_docs(root, check=True) == []
    image.unlink()
    assert [d.kind for d in update_docs(root, check=True)] == ["figure"]
    page.write_text("<!-- results figure heads-cpu,test_top1 -->\n<!-- /results -->\n")
    with pytest.raises(ConfigError, match="no finished cell has 'test_top1'"):
        update_docs(root)
