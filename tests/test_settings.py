"""Each method's own settings: declared in its file, resolved into saved configs, old flat configs migrated."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, assert_same_state, final_state, subprocess_env, tiny_overrides
from selfsup.config import apply_overrides, load_config, save_config
from selfsup.errors import ConfigError
from selfsup.methods import METHODS, resolve_method
from selfsup.methods.settings import declared

STATUS_CHECK = REPO / "tests" / "committed_cells.py"


def test_a_saved_config_holds_the_chosen_methods_settings_only(tmp_path: Path) -> None:
    for name, cls in METHODS.items():
        cfg = resolve_method(apply_overrides(load_config(), {"method.name": name}))
        assert set(cfg.method.values) == set(declared(cls.Settings)), name
    save_config(resolve_method(load_config()), tmp_path / "c.yaml")
    saved = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert saved["method"] == {
        "name": "simclr",
        "temperature": 0.2,
        "loss": "nt-xent",
        "margin": 0.5,
        "semi_hard": False,
    }


def test_keys_of_other_methods_are_dropped_and_unknown_keys_refused() -> None:
    shared = {"method.name": "byol", "method.temperature": 0.1, "method.predictor_hidden": 64}
    cfg = resolve_method(load_config(None, shared))  # a recipe several methods share
    assert "temperature" not in cfg.method.values and cfg.method.values["predictor_hidden"] == 64
    with pytest.raises(
        ConfigError, match=r"method.predictor_hiden is not a setting of byol .*'method.predictor_hidden'"
    ):
        resolve_method(load_config(None, {"method.name": "byol", "method.predictor_hiden": 64}))
    with pytest.raises(ConfigError, match="method.momentum must lie in"):
        resolve_method(load_config(None, {"method.name": "moco", "method.momentum": 1.5}))
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        resolve_method(load_config(None, {"method.name": "nope"}))


def _flat_method_keys() -> dict[str, object]:
    """Every method's settings with their defaults: the ``method`` section as configs saved it before."""
    out: dict[str, object] = {}
    for cls in METHODS.values():
        for key, value in (resolve_method(load_config(None, {"method.name": _name(cls)})).method.values).items():
            out.setdefault(key, value)
    return out


def _name(cls: type) -> str:
    return next(n for n, c in METHODS.items() if c is cls)


def test_every_committed_config_loads_and_keeps_its_methods_values() -> None:
    paths = sorted((REPO / "results").rglob("config.yaml"))
    assert len(paths) > 100
    for path in paths:
        raw = yaml.safe_load(path.read_text())
        cfg = resolve_method(load_config(path))
        own = set(declared(METHODS[cfg.method.name].Settings))
        assert set(cfg.method.values) == own, path
        given = {**(raw.get("semi") or {}), **raw["method"]}  # semi.* held the semi-supervised methods' own
        for key in own & set(given):  # the values the run trained with, unchanged
            assert cfg.method.values[key] == pytest.approx(given[key]), (path, key)


@pytest.mark.slow
def test_an_old_run_directory_with_flat_method_keys_resumes(shared_folder: Path, tmp_path: Path) -> None:
    cfg = load_config(None, tiny_overrides(shared_folder, **{"train.epochs": 2, "train.keep_checkpoints": 5}))
    from selfsup import pretrain

    pretrain(cfg, out=tmp_path / "new", log=lambda s: None)
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "new", old)
    (old / ".lock").unlink(missing_ok=True)
    raw = yaml.safe_load((old / "config.yaml").read_text())
    raw["method"] = {"name": "simclr", **_flat_method_keys(), **raw["method"]}  # every method's keys, as saved before
    (old / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    last = max((old / "checkpoints").glob("step-*.pt"))
    last.unlink()  # the run stopped before its last epoch
    (old / "metrics.json").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "selfsup", "pretrain", "--out", str(old), "--resume"]
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stdout
    assert_same_state(final_state(old), final_state(tmp_path / "new"))


def test_every_committed_sweep_cell_is_still_recognised() -> None:
    """No committed cell reads as 'changed' (which would run it again): the sweeps' config check holds."""
    done = subprocess.run(
        [sys.executable, str(STATUS_CHECK), str(REPO)], env=subprocess_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    statuses = json.loads(done.stdout)
    assert len(statuses) >= 20
    for folder, cells in statuses.items():
        assert isinstance(cells, dict), (folder, cells)
        assert all(s in ("done", "missing") for s in cells.values()), (folder, cells)
    assert sum(s == "done" for cells in statuses.values() for s in cells.values()) >= 252


def test_the_semi_supervised_methods_own_their_settings_under_their_old_names_too(tmp_path: Path) -> None:
    from selfsup.cli import build_parser

    old = tmp_path / "old.yaml"
    old.write_text("method:\n  name: fixmatch\nsemi:\n  labels: 40\n  threshold: 0.8\n  rampup_epochs: 3\n")
    cfg = resolve_method(load_config(old))  # rampup_epochs is the Pi-model's: FixMatch has none
    assert cfg.method.values == {"threshold": 0.8, "unlabeled_weight": 1.0, "ema_decay": 0.999}
    assert cfg.semi.labels == 40 and not hasattr(cfg.semi, "threshold")
    flags = ["semi", "--method", "mean-teacher", "--labels", "40", "--semi.ema_decay", "0.99"]
    args = build_parser(flags).parse_args(flags)
    assert vars(args)["cfg:method.ema_decay"] == "0.99"  # an old command line still means the same
