"""The core runs without the lab's packages (matplotlib, scikit-learn, tensorboard, ray)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_flags, subprocess_env

# Runs the command line with the lab's packages made unimportable, as on an install without `.[lab]`.
WITHOUT_LAB = """
import sys
BLOCKED = {"matplotlib", "sklearn", "tensorboard", "ray"}
for name in BLOCKED:
    sys.modules[name] = None  # import raises ModuleNotFoundError; find_spec says: not installed
import json
from selfsup.cli import main
for argv in json.loads(sys.argv[1]):  # one interpreter for every command: one PyTorch import
    code = main(argv)
    if code:
        sys.exit(code)
leaked = sorted(m for m, v in sys.modules.items() if m.partition(".")[0] in BLOCKED and v is not None)
assert not leaked, leaked
"""


def without_lab(*commands: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_LAB, json.dumps(commands)], env=subprocess_env(), capture_output=True, text=True
    )


@pytest.mark.slow
def test_train_evaluate_finetune_embed_export_without_the_lab(shared_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    steps = [
        ["pretrain", "--out", str(run), *cli_flags(shared_folder, **{"train.eval_after": True})],
        ["eval", str(run)],
        [
            "finetune",
            str(run),
            "--labels",
            "12",
            "--epochs",
            "1",
            "--finetune.val_size",
            "6",
            "--finetune.batch_size",
            "4",
        ],
        ["embed", str(run), "--data", str(shared_folder), "--out", str(tmp_path / "emb")],
        ["export", str(run)],
        ["augment", "--n", "2", "--views", "2", "--out", str(tmp_path / "v.png"), "--data", str(shared_folder)],
    ]
    done = without_lab(*steps)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run / "metrics.json").is_file() and not (run / "tensorboard").exists()
    # A lab command says, in one line, what to install.
    report = without_lab(["report", str(run)])
    assert report.returncode == 2
    err = report.stderr.strip().splitlines()
    assert len(err) == 1 and "pip install 'selfsup[lab]'" in err[0]
