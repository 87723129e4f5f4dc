"""Sweeps: a grid of config values x seeds, each cell an ordinary run directory.

A spec (YAML)::

    name: temperature
    command: pretrain            # pretrain | semi | finetune
    base: ../quick.yaml          # a recipe, relative to the spec (optional)
    overrides:                   # fixed changes to the recipe (optional)
      train.epochs: 200
    grid:                        # axes: a config key with values ...
      method.temperature: [0.01, 0.05, 0.07, 0.1, 0.5, 1.0]
      optimizer:                 # ... or a named axis whose values set several keys
        - {label: LARS, optim.name: lars, optim.lr: 1.0}
        - {label: Adam, optim.name: adam, optim.lr: 0.001}
    seeds: [0, 1]
    scale:                       # named size profiles, chosen with --scale NAME
      cpu: {train.epochs: 6, data.subset: 5000}
      cpu50k: {train.epochs: 3, seeds: [0, 1, 2]}   # a profile may set its own seeds
      cpu-ft:                    # ... and changes for the encoder alone (after the rest)
        train.epochs: 3
        encoder: {train.epochs: 6}
    encoder:                     # what finetune cells fine-tune, per seed, and what a
      base: ../quick.yaml        # cell with model.init: "@encoder" starts from
      overrides: {}
    heatmap: pair                # optional: an axis labelled "a" and "a+b", drawn by
                                 # `selfsup report` as a symmetric matrix (aug_pairs.yaml)
    x_axis: train.batch_size     # optional: the axis `selfsup report`'s accuracy figures
                                 # put on x, one line per value of the others (default:
                                 # the first; optimizer.yaml: batch on x, a line per optimizer)
    compare: row                 # optional: the axis whose values the table's significance
                                 # line compares, at each value of the others (default: the
                                 # first; label_efficiency.yaml: rows at each label count)
    reference:                   # optional: the published table the sweep reproduces, by
      source: seed 000 linear    # first-axis label (in %), a column beside ours in the
      metric: linear_top1        # table and a line in `selfsup report`'s figure of metric
      values: {0.01: 65, 0.5: 66}  # or by the first two axes: {300: {64: 71.0}}

A labelled grid value may also set ``command`` (``{label: fixmatch, command: semi, ...}``):
that cell runs as that command, so one spec can hold the rows of one table made by
different commands (label_efficiency.yaml: fine-tuning and semi-supervised rows).
A pretrain or semi cell that sets ``model.init: "@encoder"`` starts from the sweep's
encoder for its seed (pretrained once, shared with the fine-tuning cells): FixMatch
started from a SimCLR encoder beside FixMatch from scratch, in one table.

Cells run one after another; a finished cell is skipped and an interrupted one resumes
(from its own checkpoints), so a killed sweep is continued by running it again. A
finished cell counts only while its saved config is the one the spec asks for: a cell
whose value, recipe or scale changed since runs again, and the sweep names the key
(:mod:`selfsup.lab.records`). So a sweep folder under ``results/``, committed
without its checkpoints, is continued on another day and machine by running the same
command in a clone; the spec may grow meanwhile (new values, seeds), and cells it no
longer has stay on disk but leave the table.
``--plan`` prints one command per cell instead (``selfsup sweep SPEC --cell NAME``), for
running cells as separate jobs; running the whole sweep afterwards only collects.

"""

from __future__ import annotations

import itertools
import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import MOVED_TO_METHOD, Config, apply_overrides, field_types, flatten, load_config, load_yaml, save_config
from ..errors import ConfigError, RunDirError
from ..machine import note_commit
from ..rundir import CONFIG, write_atomic
from .records import cell_state, describe, has_checkpoint, stale_cells
from .results import collect, encoder_dir, markdown_table, note_encoder, write_csv

SPEC_FILE = "sweep.yaml"
#: Keys of a scale profile that are not config overrides for every cell.
SCALE_SECTIONS = ("grid", "seeds", "encoder")

#: ``model.init`` value that means "this sweep's encoder for the cell's seed".
SWEEP_ENCODER = "@encoder"
TABLE_FILE = "table.md"
COMMANDS = ("pretrain", "semi", "finetune")
_SPEC_KEYS = {
    "name",
    "command",
    "base",
    "overrides",
    "grid",
    "seeds",
    "scale",
    "encoder",
    "out",
    "description",
    "heatmap",
    "x_axis",
    "reference",
    "compare",
}
REFERENCE_METRICS = ("knn_top1", "linear_top1", "test_top1")


@dataclass
class Axis:
    """One grid dimension: a name and its values, each a label plus the keys it sets."""

    name: str
    values: list[tuple[str, dict[str, Any]]]


@dataclass
class Cell:
    """One run of a sweep.

    Attributes:
        labels: Axis name -> value label of this cell.
        overrides: Dotted config keys this cell sets.
        seed: Its seed.
        dir: Its run directory.
        command: What runs it: the spec's command, or its grid value's own.
    """

    labels: dict[str, str]
    overrides: dict[str, Any]
    seed: int
    dir: Path
    command: str = "pretrain"


@dataclass
class SweepSpec:
    """A parsed sweep spec (see the module docstring)."""

    name: str
    command: str
    base: Path | None
    overrides: dict[str, Any]
    axes: list[Axis]
    seeds: list[int]
    scale: dict[str, dict[str, Any]]
    encoder: dict[str, Any] | None
    path: Path
    out: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    #: Overrides applied last, over every cell's and encoder's values: the precision
    #: :func:`run_sweep` holds a folder to (see :func:`_pin_precision`) and this
    #: machine's ``train.budget_scale``.
    pinned: dict[str, Any] = field(default_factory=dict)

    def config(
        self,
        extra: dict[str, Any],
        scale: str | None,
        base: Path | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> Config:
        """The base recipe with the spec's overrides, the scale profile and ``extra`` applied."""
        cfg = load_config(base if base is not None else self.base)
        merged = dict(self.overrides if overrides is None else overrides)
        if scale is not None:
            merged.update({k: v for k, v in self.scale[scale].items() if k not in SCALE_SECTIONS})
        merged.update(extra)
        merged.update(self.pinned)
        from ..methods import resolve_method

        return resolve_method(apply_overrides(cfg, merged, source=str(self.path)) if merged else cfg)

    def scaled_seeds(self, scale: str | None) -> list[int]:
        """The seeds: the scale profile's own where it gives ``seeds``, else the spec's."""
        return list((self.scale.get(scale) or {}).get("seeds") or self.seeds) if scale else self.seeds

    def scaled_axes(self, scale: str | None) -> list[Axis]:
        """The axes, with values replaced where the scale profile gives a ``grid``."""
        replaced = ((self.scale.get(scale) or {}).get("grid") or {}) if scale else {}
        return [_parse_axes({a.name: replaced[a.name]}, self.path)[0] if a.name in replaced else a for a in self.axes]


def _check_reference(reference: Any, axes: list[Axis], path: Path) -> None:
    """A reference names its source and metric and gives numbers by labels of the first axis.

    A value may itself be a mapping by labels of the second axis (seed 001's accuracy by
    labels x batch: ``{300: {64: 71.0, 128: 72.1}}``); all values have the same depth.
    """
    first = axes[0]
    where = f"{path}: reference"
    if not isinstance(reference, dict) or not isinstance(reference.get("values"), dict) or not reference["values"]:
        raise ConfigError(f"{where} needs values: a mapping of {first.name} values to accuracy (%)")
    if reference.get("metric") not in REFERENCE_METRICS:
        raise ConfigError(f"{where}: metric must be one of {', '.join(REFERENCE_METRICS)}")
    nested = {isinstance(v, dict) for v in reference["values"].values()}
    if len(nested) > 1:
        raise ConfigError(f"{where}: values must be all numbers or all mappings by the second grid axis")
    if nested == {True} and len(axes) < 2:
        raise ConfigError(f"{where}: values by two axes need a second grid axis")

    def check_label(key: Any, axis: Axis) -> None:
        if _label(key) not in {label for label, _ in axis.values}:
            raise ConfigError(f"{where}: {key!r} is not a value of grid axis '{axis.name}'")

    def check_value(key: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
            raise ConfigError(f"{where}: the value for {key!r} must be an accuracy in % (0-100), got {value!r}")

    for key, value in reference["values"].items():
        check_label(key, first)
        if isinstance(value, dict):
            for key2, value2 in value.items():
                check_label(key2, axes[1])
                check_value(key2, value2)
        else:
            check_value(key, value)


def _check_seeds(seeds: Any, where: str) -> None:
    integers = isinstance(seeds, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    if not integers or not seeds:
        raise ConfigError(f"{where}: seeds must be a non-empty list of integers")


def _check_key(key: str, where: str) -> None:
    from ..methods.registry import setting_names

    section, _, name = key.partition(".")
    if section == "semi" and name in MOVED_TO_METHOD:
        section = "method"  # an old name of a semi-supervised method's setting
    try:
        known = set(field_types(section)) - {"values"}
    except KeyError:
        known = set()
    if section == "method":  # any method's own setting: a spec may set one for the cells of its method
        known |= setting_names()
    if name not in known:
        raise ConfigError(f"{where}: '{key}' is not a config key (section.key, e.g. method.temperature)")


def _label(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text.replace("/", "_").replace(" ", "")


def _parse_axes(grid: Any, path: Path) -> list[Axis]:
    """The grid's axes: a config key with values, or a named axis of labelled settings."""
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{path}: grid must map at least one axis to a list of values")
    axes = []
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid axis '{name}' needs a non-empty list of values")
        parsed = []
        for v in values:
            if isinstance(v, dict):
                sets = {k: x for k, x in v.items() if k != "label"}
                if sets.get("command", COMMANDS[0]) not in COMMANDS:
                    raise ConfigError(f"{path}: grid axis '{name}': command must be one of {', '.join(COMMANDS)}")
                for key in sets:
                    if key != "command":
                        _check_key(key, f"{path}: grid axis '{name}'")
                parsed.append((_label(v.get("label", "-".join(_label(x) for x in sets.values()))), sets))
            else:
                _check_key(name, f"{path}: grid")
                parsed.append((_label(v), {name: v}))
        axes.append(Axis(name, parsed))
    return axes


def _check_scale(scale: dict[str, Any], axis_names: list[str], path: Path) -> None:
    """Every key of every scale profile is a config key, a grid axis it shrinks, or the encoder's."""
    for profile, values in scale.items():
        for key, value in (values or {}).items():
            if key == "encoder":  # the encoder's own changes at this scale: config keys
                if not isinstance(value, dict):
                    raise ConfigError(f"{path}: scale '{profile}' encoder must map config keys to values")
                for name in value:
                    _check_key(name, f"{path}: scale '{profile}' encoder")
            elif key == "grid":  # a profile may shrink axis values too (e.g. the epochs axis)
                for name in value or {}:
                    if name not in axis_names:
                        raise ConfigError(f"{path}: scale '{profile}' changes grid axis '{name}', which the grid lacks")
            elif key == "seeds":  # ... or measure more (or fewer) seeds than the full setting
                _check_seeds(value, f"{path}: scale '{profile}'")
            else:
                _check_key(key, f"{path}: scale '{profile}'")


def _check_figures(raw: dict[str, Any], axes: list[Axis], path: Path) -> None:
    """The axes that ``heatmap``, ``x_axis`` and ``compare`` name are the grid's."""
    names = [a.name for a in axes]
    for field_ in ("heatmap", "x_axis", "compare"):
        if field_ in raw and raw[field_] not in names:
            raise ConfigError(f"{path}: {field_} must name a grid axis, got {raw[field_]!r}")
    if "x_axis" in raw and "reference" in raw and raw["x_axis"] != axes[0].name:  # references go by the first axis
        raise ConfigError(f"{path}: x_axis must be the first grid axis when the spec has a reference")


def load_spec(path: str | Path) -> SweepSpec:
    """Parse and check a sweep spec.

    Raises:
        ConfigError: For unknown spec fields, keys that are not config keys, empty axes,
            or a missing base recipe.
    """
    path = Path(path)
    raw = load_yaml(path)
    unknown = sorted(set(raw) - _SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown sweep field '{unknown[0]}' (known: {', '.join(sorted(_SPEC_KEYS))})")
    command = raw.get("command", "pretrain")
    if command not in COMMANDS:
        raise ConfigError(f"{path}: command must be one of {', '.join(COMMANDS)}, got {command!r}")

    def resolve(p: Any) -> Path | None:
        if p is None:
            return None
        q = (path.parent / str(p)).resolve()
        if not q.is_file():
            raise ConfigError(f"{path}: base recipe {p} not found (looked at {q})")
        return q

    overrides = dict(raw.get("overrides") or {})
    for key in overrides:
        _check_key(key, f"{path}: overrides")
    axes = _parse_axes(raw.get("grid"), path)
    scale = raw.get("scale") or {}
    _check_scale(scale, [a.name for a in axes], path)
    _check_figures(raw, axes, path)
    seeds = raw.get("seeds", [0])
    _check_seeds(seeds, str(path))
    if "reference" in raw:
        _check_reference(raw["reference"], axes, path)
    encoder = raw.get("encoder")
    cell_commands = {sets.get("command", command) for a in axes for _, sets in a.values}
    if "finetune" in cell_commands and not encoder:
        raise ConfigError(f"{path}: a finetune sweep needs an encoder: section (base and overrides)")
    inits = [overrides.get("model.init")] + [sets.get("model.init") for a in axes for _, sets in a.values]
    if SWEEP_ENCODER in inits and not encoder:
        raise ConfigError(f"{path}: model.init {SWEEP_ENCODER!r} needs an encoder: section (base and overrides)")
    spec = SweepSpec(
        name=str(raw.get("name", path.stem)),
        command=command,
        base=resolve(raw.get("base")),
        overrides=overrides,
        axes=axes,
        seeds=seeds,
        scale={k: dict(v or {}) for k, v in scale.items()},
        encoder=encoder,
        path=path,
        out=Path(raw["out"]) if raw.get("out") else None,
        raw=raw,
    )
    spec.config({}, None)  # every base + override combination must load
    return spec


def grid_cells(axes: list[Axis], seeds: list[int], command: str, out: Path) -> list[Cell]:
    """Every (grid point, seed) of these axes, with its run directory under ``out``."""
    result = []
    for combo in itertools.product(*(a.values for a in axes)):
        labels = {a.name: label for a, (label, _) in zip(axes, combo, strict=True)}
        overrides: dict[str, Any] = {}
        for _, sets in combo:
            overrides.update(sets)
        cell_command = overrides.pop("command", command)
        for seed in seeds:
            name = ",".join(f"{k}={v}" for k, v in labels.items()) + f",seed={seed}"
            result.append(Cell(labels, overrides, seed, out / name, cell_command))
    return result


def cells(spec: SweepSpec, out: Path, scale: str | None = None) -> list[Cell]:
    """Every (grid point, seed) of the spec, with its run directory under ``out``."""
    return grid_cells(spec.scaled_axes(scale), spec.scaled_seeds(scale), spec.command, out)


def recorded_cells(folder: Path) -> tuple[list[Cell], list[str]]:
    """The cells and axis names a sweep folder's own ``sweep.yaml`` describes.

    For reading a committed folder (the docs generator) without its spec or recipes.
    """
    where = folder / SPEC_FILE
    record = yaml.safe_load(where.read_text()) or {}
    axes = _parse_axes(record.get("grid"), where)
    replaced = ((record.get("scale") or {}).get(record.get("use_scale")) or {}).get("grid") or {}
    axes = [_parse_axes({a.name: replaced[a.name]}, where)[0] if a.name in replaced else a for a in axes]
    return grid_cells(axes, record_seeds(record), record.get("command", "pretrain"), folder), [a.name for a in axes]


def record_seeds(record: dict[str, Any]) -> list[int]:
    """The seeds a sweep folder's ``sweep.yaml`` ran: its scale profile's own, else the spec's."""
    profile = (record.get("scale") or {}).get(record.get("use_scale")) or {}
    return list(profile.get("seeds") or record.get("seeds", [0]))


def table_command(raw: dict[str, Any]) -> str:
    """Whose columns a spec's table shows: fine-tuning's if any cell fine-tunes, else semi's, else pretraining's.

    Args:
        raw: The spec as read from YAML (a sweep folder's ``sweep.yaml`` too).
    """
    command = raw.get("command", "pretrain")
    commands = {command}
    for values in (raw.get("grid") or {}).values():
        commands |= {v.get("command", command) for v in values if isinstance(v, dict)}
    return next((c for c in ("finetune", "semi") if c in commands), "pretrain")


def _seed_key(command: str) -> str:
    return "finetune.seed" if command == "finetune" else "train.seed"


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns: the sweep folder, one row per cell, the markdown table."""

    dir: Path
    rows: list[dict[str, Any]]
    table: str


@dataclass
class SweepOptions:
    """How :func:`run_sweep` runs a spec, besides where it writes.

    Attributes:
        scale: A profile of the spec's ``scale`` (e.g. 'cpu'); None = the full setting.
        plan: Only print one command per cell (``--cell NAME``), to run cells as separate jobs.
        only: Run just the cell of this name (its run directory's name).
        launcher: 'local' (cells one after another in this process) or 'ray' (each
            cell a Ray task on the cluster ``ray_address`` or ``$RAY_ADDRESS`` names, a
            local Ray otherwise; run directories must be on a filesystem every node sees).
        ray_address: The Ray cluster (default ``$RAY_ADDRESS``).
        cpus_per_cell: CPUs each Ray task asks for (default ``train.num_threads`` or 1).
        gpus_per_cell: GPUs each Ray task asks for (default 1 where the cluster has GPUs).
        reuse: Other sweep folders whose finished cells may stand in for this sweep's: a
            cell not yet run here is copied from the first run directory there whose
            saved config is exactly the one this cell asks for (e.g. the base cell that
            several tables share), instead of being trained again.
        precision: ``train.precision`` ('bf16' or 'fp32') for the cells still to run.
            Default: the precision of the folder's finished cells, so that a table
            continued on another machine keeps one precision; the recipe's where
            nothing has finished.
        budget_scale: ``train.budget_scale`` of the cells still to run: wall minutes per
            minute of the spec's ``train.time_budget`` on this machine, so that a table of
            time-budgeted cells set for one machine continues at about the same steps on
            a slower (above 1) or faster one. Finished cells keep theirs.
    """

    scale: str | None = None
    plan: bool = False
    only: str | None = None
    launcher: str = "local"
    ray_address: str | None = None
    cpus_per_cell: float | None = None
    gpus_per_cell: float | None = None
    reuse: list[str | Path] | None = None
    precision: str | None = None
    budget_scale: float | None = None


@dataclass
class _Sweep:
    """A sweep being run: its spec, folder, cells and their configs at one scale."""

    spec: SweepSpec
    folder: Path
    all_cells: list[Cell]
    configs: dict[Path, Config]
    scale: str | None


def run_sweep(
    spec_path: str | Path,
    out: str | Path | None = None,
    log: Callable[[str], None] = print,
    options: SweepOptions | None = None,
) -> SweepResult:
    """Run (or continue) every cell of a sweep, writing ``results.csv`` and the table after each.

    Args:
        spec_path: The sweep spec.
        out: The sweep folder (default: the spec's ``out``, else ``runs/sweeps/<name>[-<scale>]``).
        log: Where messages go.
        options: The scale, launcher, cells and pins (:class:`SweepOptions`; default: all cells, locally).

    Returns:
        The folder, the per-cell rows and the aggregated markdown table.

    Raises:
        ConfigError: For a bad spec or unknown scale profile, or a precision that would
            mix with the finished cells' (or that this machine only emulates).
        RunDirError: If the folder holds a different sweep.
    """
    o = options or SweepOptions()
    note_commit()
    sweep = _open(spec_path, out, o.scale)
    if o.plan:
        lines = _plan(spec_path, o.scale, out, sweep.all_cells, log)
        write_atomic(sweep.folder / "plan.sh", ("\n".join(lines) + "\n").encode())
        return SweepResult(sweep.folder, [], "")
    if o.launcher not in ("local", "ray"):
        raise ConfigError(f"unknown launcher {o.launcher!r} (use local or ray)")
    todo = _select(sweep, o, log)
    sweep.configs = _pinned_configs(sweep, todo, o, log)
    if o.launcher == "ray":
        _run_on_ray(sweep, todo, o, log)
    else:
        _run_here(sweep, todo)
    rows, table = _write_table(sweep.spec, sweep.folder, sweep.all_cells, sweep.configs, sweep.scale)
    log(table)
    return SweepResult(sweep.folder, rows, table)


def _open(spec_path: str | Path, out: str | Path | None, scale: str | None) -> _Sweep:
    """Load the spec, claim its folder, list its cells and their configs (the encoders' load too)."""
    spec = load_spec(spec_path)
    if scale is not None and scale not in spec.scale:
        known = ", ".join(spec.scale) or "none"
        raise ConfigError(f"{spec.path}: no scale profile {scale!r} (profiles: {known})")
    folder = Path(out) if out is not None else (spec.out or Path("runs") / "sweeps" / spec.name)
    if out is None and spec.out is None and scale is not None:
        folder = folder.with_name(f"{folder.name}-{scale}")
    record = {**spec.raw, "spec": str(spec.path), "use_scale": scale}
    _claim_folder(folder, record)
    all_cells = cells(spec, folder, scale)
    configs = _cell_configs(spec, all_cells, scale)
    if any(_uses_encoder(c, configs[c.dir]) for c in all_cells):  # the encoders' configs must load too
        for seed in spec.scaled_seeds(scale):
            _encoder_config(spec, seed, scale)
    return _Sweep(spec, folder, all_cells, configs, scale)


def _run_on_ray(sweep: _Sweep, todo: list[Cell], o: SweepOptions, log: Callable[[str], None]) -> None:
    """Every cell of ``todo`` a Ray task; cells of one encoder after its own task."""
    from .ray_launcher import CellBatch, run_cells_on_ray

    needs = {c.dir: c.seed for c in todo if _uses_encoder(c, sweep.configs[c.dir])}
    batch = CellBatch(sweep.spec, todo, sweep.configs, sweep.folder, sweep.scale, len(sweep.all_cells), run_cell,
                      _ensure_encoder, needs)  # fmt: skip
    run_cells_on_ray(batch, o.ray_address, o.cpus_per_cell, o.gpus_per_cell, log)


def _run_here(sweep: _Sweep, todo: list[Cell]) -> None:
    """The cells of ``todo`` one after another in this process, the table rewritten after each."""
    from tqdm import tqdm

    n = len(sweep.all_cells)
    bar = tqdm(total=n, initial=n - len(todo), desc=f"sweep {sweep.spec.name}", unit="cell", position=0,
               dynamic_ncols=True)  # fmt: skip
    try:
        for cell in todo:
            bar.set_postfix_str(cell.dir.name, refresh=True)
            run_cell(sweep.spec, cell, sweep.configs[cell.dir], sweep.folder, sweep.scale, tqdm.write)
            bar.update(1)
            _write_table(sweep.spec, sweep.folder, sweep.all_cells, sweep.configs, sweep.scale)  # after every cell
    finally:
        bar.close()


def _write_table(
    spec: SweepSpec, folder: Path, all_cells: list[Cell], configs: dict[Path, Config], scale: str | None
) -> tuple[list[dict[str, Any]], str]:
    """Write the folder's ``results.csv`` and table from its cells' records as they stand now."""
    rows = collect(spec, all_cells, {c.dir: record_config(spec, c, configs[c.dir], scale) for c in all_cells})
    axes = [a.name for a in spec.axes]
    write_csv(folder / "results.csv", rows, axes)
    table = markdown_table(rows, axes, table_command(spec.raw), spec.raw.get("reference"), spec.raw.get("compare"))
    write_atomic(folder / TABLE_FILE, (table + "\n").encode())
    return rows, table


def _cell_configs(spec: SweepSpec, all_cells: list[Cell], scale: str | None) -> dict[Path, Config]:
    """Each cell's config (by its directory): the spec's recipe with the cell's values and seed."""
    return {c.dir: spec.config({**c.overrides, _seed_key(c.command): c.seed}, scale) for c in all_cells}


def run_cell(
    spec: SweepSpec, cell: Cell, cfg: Config, folder: Path, scale: str | None, log: Callable[[str], None]
) -> None:
    """Run (or continue, from its checkpoints) one cell: what every launcher calls.

    A cell whose saved config differs from ``cfg`` (see :func:`cell_state`) is cleared first.
    """
    from ..pretraining import pretrain
    from ..rundir import prepare_run_dir

    wanted = record_config(spec, cell, cfg, scale)
    if cell_state(cell.dir, cell.command, wanted).status == "changed":
        prepare_run_dir(cell.dir, resume=False, overwrite=True)
    if cell.command == "finetune":
        _run_finetune_cell(spec, cell, cfg, folder, scale, log)
        return
    encoder = _ensure_encoder(spec, cell.seed, folder, scale, log)[0] if _uses_encoder(cell, cfg) else None
    pretrain(wanted, out=cell.dir, resume=True, log=log)
    if encoder is not None:  # the run it started from, ensured above and unchanged since
        note_encoder(cell.dir, encoder)


def _uses_encoder(cell: Cell, cfg: Config) -> bool:
    """Whether a cell needs the sweep's encoder: it fine-tunes it, or starts from it (``model.init``).

    A fine-tuning cell ``from_scratch`` trains the encoder's architecture from random
    initialisation: it needs the encoder's config, not its weights, so it runs on a
    machine that has not pretrained (or no longer has) the encoder.
    """
    if cell.command == "finetune":
        return not cfg.finetune.from_scratch
    return cfg.model.init == SWEEP_ENCODER


def record_config(spec: SweepSpec, cell: Cell, cfg: Config, scale: str | None) -> Config:
    """The config a cell's record must hold.

    ``cfg`` itself, with ``model.init: "@encoder"`` replaced by the path of the sweep's
    encoder for the cell's seed; for a fine-tuning cell, its encoder's config plus
    ``finetune.*``.
    """
    if cell.command != "finetune":
        if cfg.model.init == SWEEP_ENCODER:
            return apply_overrides(cfg, {"model.init": str(encoder_dir(cell.dir.parent, cell.seed))})
        return cfg
    ft = {k: v for k, v in flatten(cfg).items() if k.startswith("finetune.")}
    return apply_overrides(_encoder_config(spec, cell.seed, scale), ft)


def _cells_to_run(
    spec: SweepSpec,
    folder: Path,
    all_cells: list[Cell],
    configs: dict[Path, Config],
    scale: str | None,
    log: Callable[[str], None],
) -> list[Cell]:
    """The cells without a current, complete record; says which records are out of date or stale."""
    todo = []
    for c in all_cells:
        state = cell_state(c.dir, c.command, record_config(spec, c, configs[c.dir], scale))
        if state.status == "changed":
            log(f"cell {c.dir.name}: config changed since its record ({describe(state.changes)}); running it again")
        if state.status != "done":
            todo.append(c)
    encoders = {encoder_dir(folder, seed).name for seed in spec.scaled_seeds(scale)}
    stale = stale_cells(folder, {c.dir.name for c in all_cells}, encoders)
    if stale:
        log(f"{len(stale)} run(s) in {folder} are not cells of this spec any more (kept, left out of the table): "
            + ", ".join(stale[:3]) + (" ..." if len(stale) > 3 else ""))  # fmt: skip
    return todo


def _select(sweep: _Sweep, o: SweepOptions, log: Callable[[str], None]) -> list[Cell]:
    """The cells to run now: unfinished ones (only ``o.only`` if given), less those copied from ``o.reuse``."""
    spec, folder, all_cells, configs, scale = sweep.spec, sweep.folder, sweep.all_cells, sweep.configs, sweep.scale
    only, reuse = o.only, o.reuse
    unfinished = _cells_to_run(spec, folder, all_cells, configs, scale, log)
    todo = unfinished
    if only is not None:
        if only not in [c.dir.name for c in all_cells]:
            raise ConfigError(f"no cell {only!r} in this sweep (see --plan for the names)")
        todo = [c for c in todo if c.dir.name == only]
    adopted = 0
    if reuse:
        before = len(todo)
        todo = _adopt(spec, todo, configs, scale, [Path(r) for r in reuse], log)
        adopted = before - len(todo)
    done = len(all_cells) - len(unfinished) + adopted
    what = f"{len(todo)} to run" + (f" (--cell {only})" if only is not None else "")
    log(f"sweep {spec.name}: {len(all_cells)} cells, {done} done, {what} -> {folder}")
    return todo


def _pinned_configs(sweep: _Sweep, todo: list[Cell], o: SweepOptions, log: Callable[[str], None]) -> dict[Path, Config]:
    """The cells' configs once the folder's precision and this machine's budget scale are pinned.

    Both pins are applied (see :func:`_pin_precision`, :func:`_pin_budget_scale`); the
    configs are rebuilt once if either changed ``spec.pinned``, and only when cells remain.
    """
    if not todo:
        return sweep.configs
    precision_pinned = _pin_precision(sweep, todo, o.precision, log)
    if _pin_budget_scale(sweep.spec, sweep.configs, todo, o.budget_scale) or precision_pinned:
        return _cell_configs(sweep.spec, sweep.all_cells, sweep.scale)
    return sweep.configs


def _pin_precision(sweep: _Sweep, todo: list[Cell], precision: str | None, log: Callable[[str], None]) -> bool:
    """Hold the cells still to run to the precision of the folder's finished ones.

    ``train.precision: auto`` means bf16 on a machine that computes it natively and fp32
    elsewhere, so a table begun on one machine and continued on another would silently
    mix precisions, and accuracy depends on precision. Sets ``spec.pinned``; returns
    whether it did (the cells' configs must then be rebuilt).

    Raises:
        ConfigError: If ``precision`` or a recipe's own explicit precision differs from
            the finished cells', or if they are bf16, this machine only emulates bf16
            (about ten times slower) and ``precision`` does not ask for it anyway.
    """
    from ..runtime import native_bf16, resolve_device

    spec, folder, all_cells, configs, scale = sweep.spec, sweep.folder, sweep.all_cells, sweep.configs, sweep.scale
    rows = collect(spec, all_cells, {c.dir: record_config(spec, c, configs[c.dir], scale) for c in all_cells})
    held = sorted({str(r["precision"]) for r in rows if r.get("status") == "done" and r.get("precision")})
    if len(held) > 1:
        log(f"{folder} already mixes precisions ({', '.join(held)}); its table is not one precision's")
    if len(held) != 1:
        if precision is None:
            return False
        spec.pinned = {"train.precision": precision}
        return True
    (want,) = held
    if precision is not None and precision != want:
        raise ConfigError(
            f"{folder}'s finished cells ran in {want}; --precision {precision} would mix precisions in one "
            "table (choose another --out)"
        )
    own = {configs[c.dir].train.precision for c in todo} - {"auto"}
    if own - {want}:
        raise ConfigError(
            f"{folder}'s finished cells ran in {want}, but the recipe now asks for {', '.join(sorted(own))}; "
            "one table keeps one precision (choose another --out)"
        )
    device = resolve_device(configs[todo[0].dir].train.device)
    here = "bf16" if native_bf16(device) else "fp32"
    if want == "bf16" and here != "bf16" and precision is None:
        raise ConfigError(
            f"{folder}'s finished cells ran in bf16, which this machine only emulates (about ten times slower): "
            "continue it where bf16 is native (lscpu | grep avx512_bf16, or a GPU), or pass --precision bf16 "
            "to run it here anyway"
        )
    if here != want and not own:
        log(f"{folder}'s finished cells ran in {want}: the rest run in {want} too (here 'auto' would be {here})")
    spec.pinned = {"train.precision": want}
    return True


def _pin_budget_scale(
    spec: SweepSpec, configs: dict[Path, Config], todo: list[Cell], budget_scale: float | None
) -> bool:
    """Hold the cells still to run to ``train.budget_scale`` (finished cells keep theirs); whether it did.

    The configs rebuilt with it are validated like any other (a scale must be positive).

    Raises:
        ConfigError: If no cell to run has a time budget to scale.
    """
    if budget_scale is None:
        return False
    if not any(configs[c.dir].train.time_budget for c in todo):
        raise ConfigError(f"--budget-scale {budget_scale:g}: no cell to run has a train.time_budget to scale")
    spec.pinned = {**spec.pinned, "train.budget_scale": budget_scale}
    return True


def _adopt(
    spec: SweepSpec,
    todo: list[Cell],
    configs: dict[Path, Config],
    scale: str | None,
    folders: list[Path],
    log: Callable[[str], None],
) -> list[Cell]:
    """Copy finished run directories with exactly a cell's config into this sweep; the cells still to run."""
    import shutil

    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"--reuse {folder}: no such folder")
    left = []
    for c in todo:
        if c.dir.exists() and any(c.dir.iterdir()):  # begun here: resume it, do not overwrite
            left.append(c)
            continue
        if configs[c.dir].model.init == SWEEP_ENCODER:  # another sweep's encoder is not this one's
            left.append(c)
            continue
        wanted = record_config(spec, c, configs[c.dir], scale)
        found = next(
            (
                run
                for folder in folders
                for run in sorted(p for p in folder.iterdir() if p.is_dir())
                if cell_state(run, c.command, wanted).status == "done"
            ),
            None,
        )
        if found is None:
            left.append(c)
            continue
        shutil.copytree(found, c.dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".lock"))
        log(f"cell {c.dir.name}: the same config finished in {found}; copied, not run again")
    return left


def _claim_folder(folder: Path, record: dict[str, Any]) -> None:
    """Create the sweep folder, or check that it holds this sweep (same name and scale).

    The spec itself may have changed since (values added, a recipe edited): the folder's
    copy is updated, and :func:`_cells_to_run` decides which cells still count.
    """
    spec_file = folder / SPEC_FILE
    record = json.loads(json.dumps(record))
    if spec_file.is_file():
        saved = yaml.safe_load(spec_file.read_text()) or {}
        if (saved.get("name"), saved.get("use_scale")) != (record.get("name"), record.get("use_scale")):
            raise RunDirError(
                f"{folder} holds another sweep ({saved.get('name')!r}, scale {saved.get('use_scale')!r}, not "
                f"{record.get('name')!r}, scale {record.get('use_scale')!r}); choose another --out or delete it"
            )
        if saved != record:
            write_atomic(spec_file, yaml.safe_dump(record, sort_keys=False).encode())
        return
    if folder.exists() and any(folder.iterdir()):
        raise RunDirError(f"{folder} exists and is not a sweep folder; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create sweep folder {folder} ({e.strerror or e})") from None
    write_atomic(spec_file, yaml.safe_dump(record, sort_keys=False).encode())


def _encoder_config(spec: SweepSpec, seed: int, scale: str | None) -> Config:
    """The encoder's recipe: its base and overrides, the scale's values, then the scale's ``encoder:`` ones."""
    enc = spec.encoder or {}
    base = (spec.path.parent / enc["base"]).resolve() if enc.get("base") else None
    own = dict((spec.scale.get(scale) or {}).get("encoder") or {}) if scale else {}
    return spec.config({**own, "train.seed": seed}, scale, base=base, overrides=dict(enc.get("overrides") or {}))


def _ensure_encoder(
    spec: SweepSpec, seed: int, folder: Path, scale: str | None, log: Callable[[str], None]
) -> tuple[Path, Config]:
    """The seed's encoder, pretrained (or continued) until it is current and has its weights here."""
    from ..pretraining import pretrain

    encoder = encoder_dir(folder, seed)
    enc_cfg = _encoder_config(spec, seed, scale)
    state = cell_state(encoder, "pretrain", enc_cfg)
    if state.status == "changed":
        log(f"{encoder.name}: config changed since its record ({describe(state.changes)}); pretraining it again")
        pretrain(enc_cfg, out=encoder, overwrite=True, log=log)
    elif state.status != "done":
        pretrain(enc_cfg, out=encoder, resume=True, log=log)
    elif not has_checkpoint(encoder):  # a committed record: the weights stayed on the machine that trained them
        log(
            f"{encoder.name} has a record but no checkpoint here; pretraining it again to start from it"
            " (finished cells keep the figures of the run they started from)"
        )
        pretrain(enc_cfg, out=encoder, overwrite=True, log=log)
    return encoder, enc_cfg


def _run_finetune_cell(
    spec: SweepSpec, cell: Cell, cfg: Config, folder: Path, scale: str | None, log: Callable[[str], None]
) -> None:
    """Pretrain (or continue) the seed's encoder, fine-tune it as the cell says, record the cell.

    A ``from_scratch`` cell needs only the encoder's config: it is saved in the cell's own
    directory, which then stands for the encoder (no pretraining, no "encoder" in the record).
    """
    from ..eval.finetune import finetune
    from ..rundir import update_metrics_json

    ft = {k: v for k, v in flatten(cfg).items() if k.startswith("finetune.")}
    if cfg.finetune.from_scratch:  # the cell's own directory stands for the encoder: its config alone is read
        run, enc_cfg = cell.dir, _encoder_config(spec, cell.seed, scale)
    else:
        run, enc_cfg = _ensure_encoder(spec, cell.seed, folder, scale, log)
    # Saved first (a cell without its result stays unfinished): a cell from scratch reads it back.
    cell.dir.mkdir(parents=True, exist_ok=True)
    save_config(apply_overrides(enc_cfg, ft), cell.dir / CONFIG)
    # The cell's own directory gets the per-epoch log, the result and the machine: cells
    # sharing an encoder and a label count (other batch sizes, probe / LP-FT rows) must
    # not overwrite each other's curves in the encoder's run, nor wait for its lock.
    results = finetune(run, ft, log=log, out=cell.dir, resume=True)  # an interrupted cell continues
    (result,) = results.values()  # names its encoder unless it trained from scratch
    if not cfg.finetune.from_scratch:
        note_encoder(cell.dir, run)
    update_metrics_json(cell.dir, result)  # top-level test_top1: the cell is done


def _plan(
    spec_path: str | Path, scale: str | None, out: str | Path | None, all_cells: list[Cell], log: Callable[[str], None]
) -> list[str]:
    """One command per cell; each runs (or continues) that cell alone."""
    base = ["selfsup", "sweep", str(spec_path)]
    if scale is not None:
        base += ["--scale", scale]
    if out is not None:
        base += ["--out", str(out)]
    lines = [" ".join(shlex.quote(a) for a in [*base, "--cell", c.dir.name]) for c in all_cells]
    log("\n".join(lines))
    return lines
