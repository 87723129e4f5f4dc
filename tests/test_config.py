"""Config: YAML loading, overrides, validation, recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfsup.cli import build_parser
from selfsup.config import (
    Config,
    all_keys,
    apply_overrides,
    config_from_dict,
    diff,
    load_config,
    save_config,
)
from selfsup.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "configs").rglob("*.yaml"))


def test_defaults_and_roundtrip(tmp_path: Path) -> None:
    cfg = load_config()
    assert cfg.method.name == "simclr" and cfg.model.backbone == "preact_resnet26"
    save_config(cfg, tmp_path / "c.yaml")
    assert diff(load_config(tmp_path / "c.yaml"), cfg) == {}


def test_yaml_and_overrides(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  epochs: 7\n  batch_size: 64\nmethod:\n  temperature: 0.07\nmodel:\n  head_dims: [64, 32]\n")
    cfg = load_config(p, {"train.epochs": "3", "optim.lr": "0.5", "data.subset": "null", "train.compile": "true"})
    assert cfg.train.epochs == 3 and cfg.train.batch_size == 64 and cfg.method.values["temperature"] == 0.07
    assert cfg.optim.lr == 0.5 and cfg.data.subset is None and cfg.train.compile is True
    assert cfg.model.head_dims == [64, 32]
    assert apply_overrides(cfg, {"model.head_dims": "128,64"}).model.head_dims == [128, 64]
    assert apply_overrides(cfg, {"data.name": "123"}).data.name == "123"  # strings stay strings
    # A value that is not YAML is its own string, not a parser traceback.
    assert apply_overrides(cfg, {"model.init": "@encoder"}).model.init == "@encoder"
    assert apply_overrides(cfg, {"model.init": "null"}).model.init is None


def test_unknown_and_mistyped_keys_name_the_key_and_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    from selfsup.methods import resolve_method

    p.write_text("method:\n  tempreature: 0.1\n")
    with pytest.raises(
        ConfigError, match=r"method.tempreature is not a setting of simclr nor of any other method; did you mean "
    ):
        resolve_method(load_config(p))  # the method's own keys are the method's to check
    p.write_text("trian:\n  epochs: 1\n")
    with pytest.raises(ConfigError, match="unknown section 'trian'; did you mean 'train'"):
        load_config(p)
    p.write_text("train:\n  epochs: ten\n")
    with pytest.raises(ConfigError, match="bad.yaml: train.epochs: expected an integer, got 'ten'"):
        load_config(p)
    p.write_text("train: [1, 2]\n")
    with pytest.raises(ConfigError, match="section 'train' must be a mapping"):
        load_config(p)
    p.write_text("train:\n  epochs: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown config key 'train.epoch'; did you mean 'train.epochs'"):
        load_config(None, {"train.epoch": 3})


@pytest.mark.parametrize(
    "key,value,msg",
    [
        ("train.batch_size", 1, "train.batch_size must be at least 2 .batch statistics., got 1"),
        ("train.batch_size", -4, "must be at least 2"),
        ("train.epochs", 0, "train.epochs must be a positive integer"),
        ("method.temperature", 0.0, "method.temperature must be positive"),
        ("optim.name", "rmsprop", "optim.name: must be one of lars, sgd, adam, adamw"),
        ("train.precision", "fp16", "train.precision: must be one of auto, bf16, fp32"),
        ("data.subset", 0, "data.subset must be a positive integer"),
        ("train.batch_size", 2.5, "expected an integer, got 2.5"),
        ("train.compile", "maybe", "expected true or false"),
    ],
)
def test_validation(key: str, value: object, msg: str) -> None:
    from selfsup.methods import resolve_method

    with pytest.raises(ConfigError, match=msg):
        resolve_method(load_config(None, {key: value}))  # the method checks its own settings


def test_every_key_is_a_flag() -> None:
    parser = build_parser(["pretrain"])
    pretrain = parser._subparsers._group_actions[0].choices["pretrain"]  # type: ignore[union-attr]
    flags = {s for a in pretrain._actions for s in a.option_strings}
    for key in all_keys():
        assert f"--{key}" in flags
    for short in (
        "--data",
        "--method",
        "--backbone",
        "--epochs",
        "--batch-size",
        "--subset",
        "--seed",
        "--out",
        "--resume",
        "--overwrite",
        "--debug",
        "--config",
    ):
        assert short in flags
    args = parser.parse_args(["pretrain", "--epochs", "4", "--train.batch-size", "8", "--temperature", "0.3"])
    got = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:")}
    assert got == {"train.epochs": "4", "train.batch_size": "8", "method.temperature": "0.3"}


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r.parent.name != "ablations"], ids=lambda p: p.stem)
def test_recipes_load(recipe: Path) -> None:
    cfg = load_config(recipe)
    assert isinstance(cfg, Config)
    # Every recipe says what it is for: a comment header.
    assert recipe.read_text().lstrip().startswith("#"), f"{recipe.name} has no explanatory header"


def test_seed000_recipe_is_the_report() -> None:
    cfg = load_config(REPO / "configs" / "seed000_simclr.yaml")
    assert cfg.model.backbone == "preact_resnet26" and cfg.model.head_dims == [64, 32]
    assert cfg.method.values["temperature"] == 0.07 and cfg.train.batch_size == 256 and cfg.train.epochs == 200
    assert cfg.optim.name == "lars" and cfg.optim.warmup_epochs == 20 and cfg.optim.schedule == "cosine"
    assert (cfg.eval.linear_optimizer, cfg.eval.linear_lr, cfg.eval.linear_epochs) == ("adam", 1e-3, 30)
    assert cfg.augment.preset == "seed000"


def test_config_from_dict_none_is_defaults() -> None:
    assert diff(config_from_dict(None), Config()) == {}


def test_enumerations_are_literals_checked_with_a_suggestion() -> None:
    from selfsup.config import choices, field_types

    assert choices(field_types("optim")["name"]) == ("lars", "sgd", "adam", "adamw")
    assert choices(field_types("augment")["crop"]) == ("resized", "pad", "none")
    expected = r"optim.name: must be one of lars, sgd, adam, adamw, got 'lasr'; did you mean 'lars'"
    with pytest.raises(ConfigError, match=expected):
        load_config(None, {"optim.name": "lasr"})
    # 'none' is a crop, not 'unset' (which is null).
    assert load_config(None, {"augment.crop": "none"}).augment.crop == "none"
    assert load_config(None, {"augment.crop": "null"}).augment.crop is None


def test_resume_free_keys_are_marked_on_their_fields() -> None:
    from selfsup.config import resume_free_keys

    free = resume_free_keys()
    assert {"train.device", "train.precision", "train.log_every", "train.checkpoint_every"} <= free
    assert not free & {"train.epochs", "train.batch_size", "train.seed", "optim.lr", "model.backbone"}


def test_the_preset_named_none_is_not_unset() -> None:
    """'none' is a preset (no augmentation), not "unset" (which means the method's own)."""
    import typing

    from selfsup.augment.presets import PRESETS, resolve_augment
    from selfsup.config import AugmentConfig, choices

    assert set(choices(typing.get_type_hints(AugmentConfig)["preset"]) or ()) == set(PRESETS)
    cfg = load_config(overrides={"augment.preset": "none", "method.name": "simclr"})
    assert cfg.augment.preset == "none"
    resolved = resolve_augment(cfg.augment, "simclr")
    assert resolved.crop == "none" and resolved.jitter_p == 0 and resolved.grayscale_p == 0
    assert load_config(overrides={"augment.preset": "null"}).augment.preset is None
    with pytest.raises(ConfigError, match="augment.preset"):
        load_config(overrides={"augment.preset": "simclr2"})


def test_every_key_is_declared_with_its_help_and_its_range_is_checked() -> None:
    import dataclasses

    from selfsup.config import SECTIONS, field_help

    for section, cls in SECTIONS.items():
        helps = field_help(section)
        assert all(len(helps[f.name]) > 10 for f in dataclasses.fields(cls)), section
    # Every declared range refuses a value outside it, naming the key.
    for dotted, bad in {
        "train.batch_size": 1,
        "optim.momentum": 1.0,
        "eval.knn_k": 0,
        "data.test_fraction": 1.0,
    }.items():
        with pytest.raises(ConfigError, match=dotted.replace(".", r"\.")):
            load_config(None, {dotted: bad})
