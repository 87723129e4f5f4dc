"""Command line: a thin layer over the functions of :mod:`selfsup`.

Every config key is a flag ``--section.key VALUE`` (``--train.epochs 5``), the most used
ones also short (``--epochs 5``); flags override ``--config FILE.yaml``. Errors caused
by input are one line on stderr and a non-zero exit; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .config import SECTIONS, SHORT_FLAGS, choices, field_help, field_types
from .errors import SelfsupError

_PREFIX = "cfg:"


class _Parser(argparse.ArgumentParser):
    """An argument parser that takes flags only as written, and suggests the nearest one.

    argparse accepts any unambiguous prefix of a flag by default (``--train.epoch 3``
    would set ``train.epochs``); then a flag added later can silently change what an old
    command does. Here an unknown flag is an error that names the closest real one.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extra = super().parse_known_args(args, namespace)
        unknown = [a for a in extra if a.startswith("-")]
        if unknown:
            flag = unknown[0].split("=", 1)[0]
            options = [o for action in self._actions for o in action.option_strings]
            method = getattr(self, "method_settings", None)
            if method is not None and flag.startswith("--method."):
                name, own = method
                self.error(f"{flag} is not a setting of {name} (its settings: {', '.join(own) or 'none'})")
            close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
            self.error(f"unknown flag {flag}" + (f"; did you mean {close[0]}?" if close else ""))
        return parsed, extra

    def error(self, message: str) -> NoReturn:
        """One line, not the whole usage (which lists every config key)."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_config_flags(parser: argparse.ArgumentParser, sections: Sequence[str], short: dict[str, str]) -> None:
    """One flag per config key, its help the key's declared help, its choices the ``Literal``'s."""
    for section in sections:
        group = parser.add_argument_group(f"{section}: settings (override --config)")
        docs = field_help(section)
        for key, tp in field_types(section).items():
            if (section, key) != ("method", "values"):
                _add_flag(group, f"{section}.{key}", tp, docs.get(key, ""), short)


def _add_flag(group: Any, dotted: str, tp: Any, text: str, short: dict[str, str]) -> None:
    """The flag ``--SECTION.KEY`` (and its dashed and short forms) of one config key."""
    section, _, key = dotted.partition(".")
    names = [f"--{dotted}"]
    if "_" in key:
        names.append(f"--{section}.{key.replace('_', '-')}")
    names += [f"--{s}" for s, target in short.items() if target == dotted]
    help_text = text.replace("%", "%%") or None  # argparse formats help strings with %
    kwargs: dict[str, Any] = dict(dest=_PREFIX + dotted, default=argparse.SUPPRESS, help=help_text)
    allowed = choices(tp)
    if tp is bool:
        kwargs.update(nargs="?", const="true", metavar="BOOL")
    elif allowed is not None:
        kwargs.update(choices=[str(c) for c in allowed])
    else:
        kwargs.update(metavar=_metavar(tp))
    group.add_argument(*names, **kwargs)


def _add_method_flags(parser: argparse.ArgumentParser, method: str, short: dict[str, str]) -> None:
    """The flags of ``method``'s own settings (``--method.KEY``), as its file declares them."""
    import dataclasses

    from .config import MOVED_TO_METHOD, type_hints
    from .methods import METHODS

    settings = METHODS[method].Settings if method in METHODS else None
    title = f"method: {method}'s own settings (--method {method}; another --method lists its own)"
    group = parser.add_argument_group(title)
    if settings is None:
        group.description = f"{method} has no settings of its own" if method in METHODS else "unknown method"
        parser.method_settings = (method, [])  # type: ignore[attr-defined]
        return
    hints = type_hints(settings)
    parser.method_settings = (method, [f"--method.{f.name}" for f in dataclasses.fields(settings)])  # type: ignore[attr-defined]
    for f in dataclasses.fields(settings):
        _add_flag(group, f"method.{f.name}", hints[f.name], f.metadata.get("help", ""), short)
        if f.name in MOVED_TO_METHOD:  # the flag's old name, from when the semi section held it
            group.add_argument(f"--semi.{f.name}", dest=_PREFIX + f"method.{f.name}", default=argparse.SUPPRESS,
                               help=argparse.SUPPRESS)  # fmt: skip


def _chosen_method(argv: Sequence[str]) -> str:
    """The method a ``pretrain`` or ``semi`` command line trains: its ``--method``, its recipe's, or SimCLR."""
    from .config import load_yaml
    from .errors import SelfsupError

    args = list(argv)
    for i, arg in enumerate(args):
        for flag in ("--method", "--method.name"):
            if arg == flag and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    where = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"), None)
    if where is None and "--resume" in args and "--out" in args[:-1]:
        where = str(Path(args[args.index("--out") + 1]) / "config.yaml")
    try:
        raw = load_yaml(where) if where else {}
    except SelfsupError:
        raw = {}  # the command reports a bad --config itself
    method = raw.get("method") if isinstance(raw, dict) else None
    return str(method.get("name", "simclr")) if isinstance(method, dict) else "simclr"


def _metavar(tp: Any) -> str:
    """INT, FLOAT, LIST or TEXT, from a field's type (the inner one of an optional field)."""
    import types
    import typing

    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    base = typing.get_origin(tp) or tp
    return {int: "INT", float: "FLOAT", list: "LIST"}.get(base, "TEXT")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k[len(_PREFIX) :]: v for k, v in vars(args).items() if k.startswith(_PREFIX)}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The ``selfsup`` argument parser with its subcommands.

    ``pretrain`` and ``semi`` take the flags of the chosen method's own settings (see
    :func:`_chosen_method`), so the command line of another command, and ``selfsup
    --help``, need not import the methods (nor PyTorch).
    """
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = _Parser(prog="selfsup", description="Self-supervised representation learning.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for name, text in (
        ("pretrain", "train an encoder, then evaluate it"),
        ("semi", "semi-supervised training with N labels (pi, mean-teacher, or supervised on the N alone)"),
    ):
        p = sub.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}; every config key is a flag.")
        p.add_argument("--config", metavar="FILE.yaml", help="a recipe (see configs/)")
        p.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/<method>-<backbone>-<time>)")
        p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
        p.add_argument("--overwrite", action="store_true", help="delete the run in --out and start over")
        p.add_argument("--debug", action="store_true", help="show tracebacks")
        _add_config_flags(p, list(SECTIONS), SHORT_FLAGS)
        if command == name:
            _add_method_flags(p, _chosen_method(argv), SHORT_FLAGS)
    _add_eval_parsers(sub)
    _add_sweep_parsers(sub)
    _add_embed_parser(sub)
    _add_augment_parser(sub)
    return parser


def _add_eval_parsers(sub: Any) -> None:
    """``selfsup eval`` and ``selfsup finetune``."""
    e = sub.add_parser(
        "eval",
        help="kNN and linear-probe accuracy of a run's encoder",
        description="Evaluate a run's encoder on the full test split; writes RUN_DIR/metrics.json.",
    )
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--device", help="device (default: the run's train.device)")
    e.add_argument(
        "--random-init",
        action="store_true",
        help="evaluate the same architecture at its random initialisation (a baseline)",
    )
    e.add_argument(
        "--after-head",
        action="store_true",
        help="evaluate the projection head's output instead of the encoder's (SimCLR's Figure 8)",
    )
    which = e.add_mutually_exclusive_group()
    which.add_argument("--step", type=int, metavar="N", help="evaluate the checkpoint of training step N")
    which.add_argument(
        "--milestones", action="store_true", help="evaluate every milestone checkpoint (train.checkpoint_every)"
    )
    e.add_argument("--debug", action="store_true", help="show tracebacks")
    e.add_argument("--config", metavar="FILE.yaml", help="a recipe with an eval: section")
    _add_config_flags(e, ["eval"], {})

    f = sub.add_parser(
        "finetune",
        help="fine-tune a run's encoder with N labels and test it",
        description="Fine-tune a run's encoder with a new linear head on N labelled images, keep the "
        "epoch with the lowest validation loss, report test top-1 into RUN_DIR/metrics.json "
        "(or OUT/metrics.json with --out). Each label count trains as a run of its own in "
        "OUT/finetune/labels-N/ (checkpoints, per-epoch records); RUN_DIR is only read.",
    )
    f.add_argument("run_dir", metavar="RUN_DIR")
    f.add_argument(
        "--out",
        metavar="DIR",
        help="write the results and the fine-tuning runs here (default: RUN_DIR)",
    )
    again = f.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue fine-tunings begun in OUT")
    again.add_argument("--overwrite", action="store_true", help="start fine-tunings already in OUT over")
    f.add_argument("--device", help="device (default: the run's train.device)")
    f.add_argument("--random-init", action="store_true", help="train the same architecture from scratch instead")
    f.add_argument("--debug", action="store_true", help="show tracebacks")
    f.add_argument("--config", metavar="FILE.yaml", help="a recipe with a finetune: section")
    short = {"labels": "finetune.labels", "epochs": "finetune.epochs", "time-budget": "finetune.time_budget"}
    _add_config_flags(f, ["finetune"], short)


def _add_sweep_parsers(sub: Any) -> None:
    """``selfsup sweep``, ``selfsup report``, ``python -m selfsup.lab.docs`` and ``selfsup export``."""
    _add_sweep_parser(sub)
    _add_report_parsers(sub)


def _add_sweep_parser(sub: Any) -> None:
    """``selfsup sweep``."""
    s = sub.add_parser(
        "sweep",
        help="run a grid of configs x seeds (resumable), write results.csv and a table",
        description="Run or continue every cell of a sweep spec (see configs/ablations/).",
    )
    s.add_argument("spec", metavar="SPEC.yaml")
    s.add_argument("--scale", metavar="NAME", help="a size profile of the spec's scale: section, e.g. cpu")
    s.add_argument("--out", metavar="DIR", help="sweep folder (default runs/sweeps/<name>[-<scale>])")
    s.add_argument("--plan", action="store_true", help="print one command per cell instead of running")
    s.add_argument("--cell", metavar="NAME", help="run only this cell (names as --plan prints them)")
    s.add_argument(
        "--reuse",
        metavar="DIR",
        action="append",
        help="another sweep folder: a cell with exactly the same config finished there is copied, not run (repeatable)",
    )
    s.add_argument(
        "--precision",
        choices=["bf16", "fp32"],
        help="train.precision of the cells still to run (default: that of the folder's finished cells, so a "
        "table keeps one precision across machines; else the recipe's)",
    )
    s.add_argument(
        "--budget-scale",
        type=float,
        metavar="X",
        help="train.budget_scale of the cells still to run: wall minutes per minute of the spec's time budget "
        "here (e.g. 1.5 where the bare step is two thirds as fast as on the machine the budget was set for)",
    )
    s.add_argument(
        "--launcher",
        choices=["local", "ray"],
        default="local",
        help="local: cells one after another here; ray: each cell a Ray task (pip install ray)",
    )
    s.add_argument("--ray-address", metavar="ADDR", help="the Ray cluster (default $RAY_ADDRESS, else a local Ray)")
    s.add_argument("--cpus-per-cell", type=float, help="CPUs a Ray task asks for (default train.num_threads or 1)")
    s.add_argument("--gpus-per-cell", type=float, help="GPUs a Ray task asks for (default 1 if the cluster has GPUs)")
    s.add_argument("--debug", action="store_true", help="show tracebacks")


def _add_report_parsers(sub: Any) -> None:
    """``selfsup report``, ``python -m selfsup.lab.docs`` and ``selfsup export``."""
    r = sub.add_parser(
        "report",
        help="write report.html with plots for a run, a sweep or a folder of runs",
        description="Write DIR/report.html and its PNGs (DIR/report/) for a run, a sweep folder or a folder of "
        "runs (one figure per method of every logged signal against steps, a line per run).",
    )
    r.add_argument("dir", metavar="DIR")
    r.add_argument("--samples", type=int, default=2000, help="test images in the t-SNE map (runs)")
    r.add_argument("--no-embedding", action="store_true", help="skip the t-SNE map and retrievals (runs)")
    r.add_argument("--debug", action="store_true", help="show tracebacks")

    x = sub.add_parser(
        "export",
        help="write a run's encoder as safetensors and a torchvision state dict",
        description="Export the encoder of RUN_DIR's newest checkpoint to RUN_DIR/export/.",
    )
    x.add_argument("run_dir", metavar="RUN_DIR")
    x.add_argument("--out", metavar="DIR", help="destination folder (default RUN_DIR/export)")
    x.add_argument(
        "--format",
        choices=["safetensors", "onnx"],
        default="safetensors",
        help="safetensors (+ a torchvision state dict) or onnx (dynamic batch axis); default safetensors",
    )
    x.add_argument("--debug", action="store_true", help="show tracebacks")


def _add_augment_parser(sub: Any) -> None:
    """``selfsup augment``: the augmentation preview."""
    a = sub.add_parser(
        "augment",
        help="draw real images and their augmented views into a PNG",
        description="Draw N images and VIEWS augmented views of each (the batch augmentation training runs) "
        "into a PNG; every augment.* key is a flag.",
    )
    a.add_argument("--n", type=int, default=8, help="images (rows), default 8")
    a.add_argument("--views", type=int, default=4, help="views per image, default 4")
    a.add_argument("--out", default="views.png", metavar="FILE.png", help="default views.png")
    a.add_argument("--data", default="cifar10", metavar="PATH", help="default cifar10 (bundled)")
    a.add_argument("--seed", type=int, default=0, help="chooses the images and the augmentations")
    a.add_argument("--debug", action="store_true", help="show tracebacks")
    _add_config_flags(a, ["augment"], {"preset": "augment.preset"})


def _add_embed_parser(sub: Any) -> None:
    m = sub.add_parser(
        "embed",
        help="embeddings of every image of a folder, tar or dataset (.npy + index.csv); --query finds neighbours",
        description="Encode every image of --data with a run's (or an export's) encoder into DIR/embeddings.npy "
        "(float32, N x D) and DIR/index.csv; with --query IMAGE, print the k nearest images of DIR instead.",
    )
    m.add_argument("source", nargs="?", metavar="RUN_DIR|EXPORT", help="the encoder (with --query: default DIR's)")
    m.add_argument("--data", metavar="PATH", help="a folder, a tar, or cifar10 / cifar10-pickle")
    m.add_argument("--out", metavar="DIR", required=True, help="the embedding folder (written, or read with --query)")
    m.add_argument("--overwrite", action="store_true", help="replace the embeddings in an existing DIR")
    m.add_argument("--split", choices=["train", "test"], help="only this split (datasets, folders with splits)")
    m.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    m.add_argument("--batch-size", type=int, help="images per forward pass")
    m.add_argument("--skip-invalid", action="store_true", help="leave out images that cannot be decoded")
    m.add_argument("--query", metavar="IMAGE", help="print the images of DIR nearest to IMAGE (cosine)")
    m.add_argument("-k", type=int, default=8, help="neighbours to print with --query (default 8)")
    m.add_argument("--debug", action="store_true", help="show tracebacks")


def _warning_line(message: Any, category: type[Warning], filename: str, lineno: int, line: Any = None) -> str:
    return f"selfsup: warning: {message}\n"


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from .config import load_config
    from .errors import ConfigError
    from .pretraining import pretrain
    from .rundir import is_run_dir, load_run_config

    overrides = _overrides(args)
    if args.resume and args.out and is_run_dir(Path(args.out)) and not args.config and not overrides:
        cfg = load_run_config(Path(args.out))  # plain --resume: the run's own settings
    else:
        cfg = load_config(args.config, overrides)
    if args.command == "semi":
        if cfg.semi.labels is None:
            raise ConfigError("selfsup semi needs --labels N (semi.labels), the number of labelled images")
        from .methods import semi_supervised_methods

        allowed = semi_supervised_methods()
        if cfg.method.name not in allowed:
            raise ConfigError(f"selfsup semi trains {', '.join(allowed)}, not {cfg.method.name!r} (--method)")
    result = pretrain(cfg, out=args.out, resume=args.resume, overwrite=args.overwrite)
    from .distributed import rank

    if rank() != 0:
        return 0  # under torchrun, rank 0 reports
    print(f"run directory: {result.run_dir}")

    m = result.metrics
    names = {
        "knn_top1": "kNN top-1",
        "linear_top1": "linear top-1",
        "test_top1": "test top-1",
        "student_test_top1": "student test top-1",
    }
    parts = [f"{label}: {m[key]:.4f}" for key, label in names.items() if key in m]

    if parts:
        print("   ".join(parts) + f"   (test images: {m['n_test']})")
    return 0


def _section_overrides(args: argparse.Namespace, section: str) -> dict[str, Any]:
    """Overrides from the ``section`` of ``--config`` (if given), then from the flags."""
    from .config import load_config, load_yaml

    out: dict[str, Any] = {}
    if args.config:
        raw = load_yaml(args.config)
        other = [k for k in raw if k != section]
        if other:
            from .errors import ConfigError

            raise ConfigError(
                f"{args.config}: 'selfsup {args.command}' reads only its {section}: section, not {other[0]}"
            )
        cfg = load_config(args.config)
        out = {f"{section}.{k}": v for k, v in vars(getattr(cfg, section)).items() if k in raw.get(section, {})}
    out.update(_overrides(args))
    return out


def _cmd_eval(args: argparse.Namespace) -> int:
    from .eval import Which, evaluate_milestones, evaluate_run

    overrides = _section_overrides(args, "eval")
    if args.milestones:
        rows = evaluate_milestones(args.run_dir, overrides, device=args.device, log=lambda _m: None)
        accs = [k for k in rows[0] if k.endswith("top1")] if rows else ["knn_top1", "linear_top1"]
        names = [k.replace("knn", "kNN").replace("_top1", " top-1").replace("_", " ") for k in accs]
        print("| epoch | step | " + " | ".join(names) + " |\n|---:|---:|" + "---:|" * len(accs))
        for r in rows:
            print(f"| {r['epoch']} | {r['step']} | " + " | ".join(f"{r[k]:.4f}" for k in accs) + " |")
        return 0
    evaluate_run(
        args.run_dir,
        overrides,
        device=args.device,
        which=Which(random_init=args.random_init, checkpoint=args.step, after_head=args.after_head),
    )
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .lab import SweepOptions, run_sweep

    result = run_sweep(
        args.spec,
        out=args.out,
        options=SweepOptions(
            scale=args.scale,
            plan=args.plan,
            only=args.cell,
            launcher=args.launcher,
            ray_address=args.ray_address,
            cpus_per_cell=args.cpus_per_cell,
            gpus_per_cell=args.gpus_per_cell,
            reuse=args.reuse,
            precision=args.precision,
            budget_scale=args.budget_scale,
        ),
    )
    if not args.plan:
        print(f"results: {result.dir / 'results.csv'}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .lab.report import make_report

    print(make_report(args.dir, samples=args.samples, embedding=not args.no_embedding))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_run

    meta = export_run(args.run_dir, args.out, fmt=args.format)
    print("\n".join(meta["files"]))
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from .errors import ConfigError

    if args.query:
        from .embed import embed_query

        for hit in embed_query(args.out, args.query, k=args.k, source=args.source, device=args.device):
            label = f"  [{hit['label']}]" if hit["label"] else ""
            print(f"{hit['rank']:>3}  {hit['similarity']:.4f}  {hit['path']}{label}")
        return 0
    if not args.source or not args.data:
        raise ConfigError("selfsup embed needs RUN_DIR (or an export folder) and --data PATH (or --query IMAGE)")
    from .embed import EmbedOptions, embed

    out = embed(
        args.source,
        args.data,
        args.out,
        overwrite=args.overwrite,
        options=EmbedOptions(
            split=args.split, device=args.device, batch_size=args.batch_size, skip_invalid=args.skip_invalid
        ),
    )
    import json

    meta = json.loads((out / "meta.json").read_text())
    print(
        f"{meta['count']} images -> {out / 'embeddings.npy'} ({meta['count']} x {meta['feature_dim']}, float32), "
        f"{out / 'index.csv'}"
    )
    return 0


def _cmd_augment(args: argparse.Namespace) -> int:
    from .config import apply_overrides, load_config
    from .preview import preview

    cfg = apply_overrides(load_config(), _overrides(args))
    print(preview(cfg.augment.preset, args.n, args.views, args.out, args.data, args.seed, augment=cfg.augment))
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from .eval.finetune import finetune

    overrides = _section_overrides(args, "finetune")
    finetune(args.run_dir, overrides, args.random_init, args.device, out=args.out, resume=args.resume,
             overwrite=args.overwrite)  # fmt: skip
    return 0


def _run(command: Any, args: argparse.Namespace) -> int:
    from .distributed import shutdown

    try:
        return int(command(args))
    finally:
        shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``selfsup`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.version:
        from .version import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    warnings.formatwarning = _warning_line  # type: ignore[assignment]
    debug = getattr(args, "debug", False)
    commands = {
        "pretrain": _cmd_pretrain,
        "semi": _cmd_pretrain,
        "eval": _cmd_eval,
        "finetune": _cmd_finetune,
        "export": _cmd_export,
        "sweep": _cmd_sweep,
        "report": _cmd_report,
        "embed": _cmd_embed,
        "augment": _cmd_augment,
    }

    try:
        return _run(commands[args.command], args)
    except SelfsupError as e:
        if debug:
            raise
        print(f"selfsup: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfsup: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one line for users, traceback with --debug
        from .train import Interrupted

        if isinstance(e, Interrupted):
            print(f"selfsup: {e}", file=sys.stderr)
            return 130
        if debug:
            raise
        print(
            f"selfsup: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
