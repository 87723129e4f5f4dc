"""The command line: bad input gives one line and a non-zero exit; a tiny run end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import cli_flags, subprocess_env
from selfsup.cli import main
from selfsup.errors import ConfigError


def run_main(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def bad_yaml(tmp_path: Path, text: str) -> str:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(
    "case",
    [
        "missing_data",
        "empty_folder",
        "corrupt_image",
        "unknown_backbone",
        "unknown_method",
        "unknown_yaml_key",
        "mistyped_yaml_value",
        "zero_batch",
        "negative_batch",
        "existing_run",
    ],
)
def test_bad_input_is_one_line(
    case: str, shared_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    data: Path | str = shared_folder
    extra: list[str] = []
    expect = ""
    if case == "missing_data":
        data, expect = tmp_path / "nope", "data path does not exist"
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        data, expect = tmp_path / "empty", "no files found in"
    elif case == "corrupt_image":
        import shutil

        data = tmp_path / "copy"
        shutil.copytree(shared_folder, data)
        (data / "train" / "cat" / "0001.png").write_bytes(b"not a png")
        expect = "train/cat/0001.png: cannot decode image"
    elif case == "unknown_backbone":
        extra, expect = ["--backbone", "resnet19"], "unknown backbone 'resnet19'"
    elif case == "unknown_method":
        extra, expect = ["--method", "byol2"], "unknown method 'byol2'"
    elif case == "unknown_yaml_key":
        extra = ["--config", bad_yaml(tmp_path, "train:\n  epoch: 3\n")]
        expect = "unknown key 'epoch' in section 'train'; did you mean 'epochs'"
    elif case == "mistyped_yaml_value":
        extra = ["--config", bad_yaml(tmp_path, "train:\n  batch_size: big\n")]
        expect = "train.batch_size: expected an integer, got 'big'"
    elif case == "zero_batch":
        extra, expect = ["--batch-size", "0"], "train.batch_size must be at least 2 (batch statistics), got 0"
    elif case == "negative_batch":
        extra, expect = ["--batch-size=-8"], "train.batch_size must be at least 2 (batch statistics), got -8"
    elif case == "existing_run":
        out.mkdir()
        (out / "config.yaml").write_text("{}\n")
        expect = "already exists; pass --resume"
    code, _, err = run_main(capsys, ["pretrain", "--out", str(out), *cli_flags(data), *extra])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("selfsup: error: ") and expect in lines[0], err
    assert "Traceback" not in err
    if case != "existing_run":
        assert not out.exists()


def test_debug_shows_the_traceback(shared_folder: Path) -> None:
    with pytest.raises(ConfigError, match="unknown backbone"):
        main(["pretrain", "--debug", *cli_flags(shared_folder), "--backbone", "resnet19"])


def test_eval_of_a_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, ["eval", str(tmp_path / "none")])
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_pretrain_then_eval(shared_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code, stdout, _ = run_main(
        capsys, ["pretrain", "--out", str(out), *cli_flags(shared_folder, **{"train.eval_after": True})]
    )
    assert code == 0 and "kNN top-1:" in stdout and "linear top-1:" in stdout
    code, stdout, _ = run_main(capsys, ["eval", str(out), "--eval.linear-epochs", "2", "--eval.knn_k", "3"])
    assert code == 0 and "kNN top-1" in stdout
    code, _, err = run_main(capsys, ["eval", str(out), "--random-init"])
    assert code == 0
    ft = ["finetune", str(out), "--out", str(tmp_path / "ft"), "--labels", "5", "--epochs", "1"]
    code, stdout, _ = run_main(capsys, [*ft, "--finetune.val_size", "5", "--finetune.batch_size", "4"])
    assert code == 0 and "fine-tuned (pretrained encoder, 5 labels)" in stdout
    assert (tmp_path / "ft" / "finetune" / "labels-5" / "metrics.jsonl").is_file() and not (out / "finetune").exists()


@pytest.mark.slow
def test_console_script_subprocess(tmp_path: Path) -> None:
    env = subprocess_env()
    r = subprocess.run(
        [sys.executable, "-m", "selfsup", "pretrain", "--batch-size", "0"], env=env, capture_output=True, text=True
    )
    assert (
        r.returncode == 2
        and r.stderr.strip() == "selfsup: error: train.batch_size must be at least 2 (batch statistics), got 0"
    )
    r = subprocess.run([sys.executable, "-m", "selfsup", "--version"], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip()


def test_unreadable_image_folder_with_odd_files_is_converted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "odd"
    for split, n in (("train", 8), ("test", 2)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("LA" if i % 2 else "L", (40 + i, 30)).save(root / split / cls / f"{i}.png")
    code, _, err = run_main(
        capsys, ["pretrain", "--out", str(tmp_path / "r"), *cli_flags(root, **{"train.batch_size": 8})]
    )
    assert code == 0, err


@pytest.mark.parametrize(
    "argv,suggestion",
    [
        (["pretrain", "--train.epoch", "3"], "--train.epochs"),
        (["pretrain", "--epoch", "3"], "--epochs"),
        (["eval", "run", "--eval.linear_epoch", "3"], "--eval.linear_epochs"),
        (["export", "run", "--form", "onnx"], "--format"),
    ],
)
def test_abbreviated_flags_are_refused_with_the_nearest_flag(
    argv: list[str], suggestion: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"unknown flag {argv[-2]}; did you mean {suggestion}?" in err[0], err


def test_help_is_fast_needs_no_torch_and_explains_every_flag() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from selfsup.cli import main\n"
        "for argv in (['--help'], ['eval', '--help'], ['finetune', '--help']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main(argv)\n"
        "print('torch' in sys.modules, 'numpy' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True)
    torch_loaded, numpy_loaded = done.stdout.split()
    # Help is fast because it loads neither PyTorch nor NumPy; asserted as that cause, not
    # as a wall-clock bound, which a loaded machine would break. (`pretrain --help` lists the
    # chosen method's own settings, which its file declares beside its PyTorch code.)
    assert torch_loaded == "False" and numpy_loaded == "False", done.stderr
    from selfsup.cli import build_parser

    parser = build_parser(["pretrain"])
    sub = next(a for a in parser._actions if a.dest == "command").choices  # type: ignore[attr-defined]
    for name in ("pretrain", "semi", "eval", "finetune", "augment"):
        for action in sub[name]._actions:
            if action.dest.startswith("cfg:"):
                assert action.help, f"{name} {action.option_strings[0]} has no help text"
    optim = next(a for a in sub["pretrain"]._actions if a.dest == "cfg:optim.name")
    assert optim.choices == ["lars", "sgd", "adam", "adamw"]


def test_pretrain_help_lists_the_chosen_methods_own_settings(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, own, other in (
        (["pretrain", "--method", "byol", "--help"], "--method.predictor_hidden", "--method.temperature"),
        (["pretrain", "--help"], "--method.temperature", "--method.predictor_hidden"),  # SimCLR by default
        (["pretrain", "--method=dino", "--help"], "--method.teacher_temp", "--method.queue_size"),
    ):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        assert own in out and other not in out, argv
    # A setting of another method is refused in one line that names the chosen method.
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--method", "byol", "--method.temperature", "0.1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "not a setting of byol" in err[0] and "predictor_hidden" in err[0]
