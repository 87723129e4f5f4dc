"""Runs that survive kills, full disks and hostile files; export to torchvision."""

from __future__ import annotations

import errno
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import (
    assert_same_state,
    cli_command,
    final_state,
    subprocess_env,
    tiny_overrides,
    wait_for_step,
)
from selfsup import pretrain
from selfsup.checkpoint import load_checkpoint
from selfsup.cli import main
from selfsup.config import load_config
from selfsup.errors import CheckpointError, DataError, RunDirError
from selfsup.eval import evaluate_run
from selfsup.methods.common import load_backbone_weights
from selfsup.models import build_backbone
from selfsup.rundir import read_jsonl

EVERY_STEP = ("--train.checkpoint_minutes", "1e-9")  # a checkpoint after every step


def resume(out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "selfsup", "pretrain", "--out", str(out), "--resume"]
    return subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True)


@pytest.mark.slow
def test_ten_kills_at_random_moments(shared_folder: Path, tmp_path: Path, reference_run: Path) -> None:
    rng = random.Random(1234)
    out = tmp_path / "run"
    kills = 0
    # Ten kills, each after a random step and a random further delay (which often lands
    # inside a checkpoint write, one runs after every step here).
    targets = sorted(rng.sample(range(1, 17), 10))
    for target in targets:
        cmd = cli_command(out, shared_folder, *EVERY_STEP, "--resume")
        proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_step(out, target, proc)
        except AssertionError:
            proc.kill()
            raise
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    assert kills == 10
    done = resume(out)
    assert done.returncode == 0, done.stderr
    assert_same_state(final_state(out), final_state(reference_run))
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 19))
    assert not list((out / "checkpoints").glob(".*.tmp"))


SLOW_WRITE = """
import os, sys, tempfile, time
import selfsup.checkpoint as ck
real = ck.write_atomic
def half_then_hang(path, data):
    if path.name == "step-000000008.pt":
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.write(fd, data[: len(data) // 2]); os.fsync(fd)
        open(os.environ["MARKER"], "w").close()
        time.sleep(120)
    return real(path, data)
ck.write_atomic = half_then_hang
from selfsup.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_kill_during_a_checkpoint_write(shared_folder: Path, tmp_path: Path, reference_run: Path) -> None:
    out, marker = tmp_path / "run", tmp_path / "marker"
    cmd = cli_command(out, shared_folder, *EVERY_STEP)
    cmd = [sys.executable, "-c", SLOW_WRITE, *cmd[3:]]  # same arguments, patched writer
    proc = subprocess.Popen(cmd, env=subprocess_env(MARKER=str(marker)), stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.time() - t0 < 120
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = out / "checkpoints"
    assert list(ckpt.glob(".step-000000008.pt.*.tmp")), "the torn write should be a temporary file"
    assert not (ckpt / "step-000000008.pt").exists()
    assert final_state(out)["step"] == 7  # the newest complete checkpoint loads
    done = resume(out)
    assert done.returncode == 0, done.stderr
    assert_same_state(final_state(out), final_state(reference_run))
    assert not list(ckpt.glob(".*.tmp"))


@pytest.mark.slow
def test_corrupt_newest_checkpoint_falls_back(shared_folder: Path, tmp_path: Path, reference_run: Path) -> None:
    out = tmp_path / "run"
    subprocess.run(cli_command(out, shared_folder), check=True, env=subprocess_env(), capture_output=True)
    newest = out / "checkpoints" / "step-000000018.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated checkpoint"):
        load_checkpoint(newest)
    done = resume(out)
    assert done.returncode == 0, done.stderr
    warning = [line for line in done.stderr.splitlines() if "warning" in line]
    assert warning and "step-000000018.pt" in warning[0] and "trying an earlier checkpoint" in warning[0]
    assert "resuming" in done.stdout and "step-000000012.pt" in done.stdout
    assert_same_state(final_state(out), final_state(reference_run))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_save_and_exit_cleanly(sig: int, shared_folder: Path, tmp_path: Path, reference_run: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        cli_command(out, shared_folder),
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_step(out, 4, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "checkpoint saved, continue with --resume" in err and "Traceback" not in err, err
    assert 4 <= final_state(out)["step"] < 18
    assert resume(out).returncode == 0
    assert_same_state(final_state(out), final_state(reference_run))


def test_full_disk_during_a_checkpoint_write(
    shared_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import selfsup.checkpoint as ck

    real, calls = ck.write_atomic, []

    def fails_second_time(path: Path, data: bytes) -> None:
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ck, "write_atomic", fails_second_time)
    cfg = load_config(None, tiny_overrides(shared_folder, **{"train.epochs": 3}))
    out = tmp_path / "run"
    with pytest.raises(
        CheckpointError,
        match=r"No space left on device\); the previous checkpoint "
        r"step-000000006.pt is intact",
    ):
        pretrain(cfg, out=out, log=lambda s: None)
    assert final_state(out)["step"] == 6
    monkeypatch.setattr(ck, "write_atomic", real)
    pretrain(cfg, out=out, resume=True, log=lambda s: None)
    assert final_state(out)["step"] == 18


def test_unwritable_or_impossible_output(
    shared_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import selfsup.rundir as rd

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(
        [
            "pretrain",
            "--out",
            str(blocker / "run"),
            *sum(
                ([f"--{k}", str(v)] for k, v in tiny_overrides(shared_folder, **{"model.head_dims": "32,16"}).items()),
                [],
            ),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "cannot create run directory" in err and len(err.strip().splitlines()) == 1

    def denied(*a: object, **k: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    existing = tmp_path / "mine"
    existing.mkdir()
    monkeypatch.setattr(rd.tempfile, "mkstemp", denied)
    cfg = load_config(None, tiny_overrides(shared_folder))
    with pytest.raises(RunDirError, match="is not writable .*Permission denied"):
        pretrain(cfg, out=existing / "run", log=lambda s: None)


def test_bad_input_keeps_the_existing_run(shared_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = load_config(None, tiny_overrides(shared_folder, **{"train.epochs": 1}))
    pretrain(cfg, out=out, log=lambda s: None)
    before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*")}
    bad = load_config(None, tiny_overrides(tmp_path / "missing", **{"train.epochs": 1}))
    with pytest.raises(DataError, match="does not exist"):
        pretrain(bad, out=out, overwrite=True, log=lambda s: None)
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*")} == before


class _Trap:
    """Unpickling this runs code: it would create a file."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.target, "w"))


def test_booby_trapped_checkpoint_is_refused(
    shared_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    pretrain(load_config(None, tiny_overrides(shared_folder, **{"train.epochs": 1})), out=out, log=lambda s: None)
    pwned = tmp_path / "pwned"
    trap = out / "checkpoints" / "step-000000099.pt"
    torch.save({"model": {}, "step": 99, "payload": _Trap(str(pwned))}, trap)
    with pytest.raises(CheckpointError, match=r"refused to load: it references io.open, which could run code"):
        load_checkpoint(trap)
    with pytest.warns(UserWarning, match="refused to load"):
        m = evaluate_run(out, {"eval.linear_epochs": 1}, log=lambda s: None)
    assert m["checkpoint_step"] == 6  # the good checkpoint, not the trap
    with pytest.raises(CheckpointError, match="refused to load"):
        load_backbone_weights(build_backbone("preact_resnet8"), trap)
    (out / "checkpoints" / "step-000000006.pt").unlink()
    code = main(["eval", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "refused to load" in err.splitlines()[-1] and "Traceback" not in err
    assert not pwned.exists(), "the trap ran"
    # A pickle that is not a checkpoint at all.
    (out / "checkpoints" / "step-000000100.pt").write_bytes(pickle.dumps(_Trap(str(pwned))))
    with pytest.raises(CheckpointError):
        load_checkpoint(out / "checkpoints" / "step-000000100.pt")
    assert not pwned.exists()


@pytest.mark.slow
def test_one_writer_per_run_directory(shared_folder: Path, tmp_path: Path) -> None:
    """A second process in a busy run directory is refused, naming the holder; a killed holder frees it."""
    out = tmp_path / "run"
    first = subprocess.Popen(
        [*cli_command(out, shared_folder, *EVERY_STEP), "--train.epochs", "500"],
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_step(out, 2, first)
        for second in (
            [sys.executable, "-m", "selfsup", "pretrain", "--out", str(out), "--resume"],
            [sys.executable, "-m", "selfsup", "eval", str(out)],
            [sys.executable, "-m", "selfsup", "pretrain", "--out", str(out), "--overwrite"],
        ):
            done = subprocess.run(second, env=subprocess_env(), capture_output=True, text=True, timeout=120)
            assert done.returncode == 2, done.stderr
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and f"is in use by process {first.pid} (selfsup pretrain" in lines[0], lines
        assert first.poll() is None  # the holder went on undisturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The kernel released the dead holder's lock: the run is usable at once.
    done = subprocess.run(
        [sys.executable, "-m", "selfsup", "eval", str(out), "--eval.linear_epochs", "1"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "metrics.json").is_file()
