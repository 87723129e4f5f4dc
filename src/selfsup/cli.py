"""Command line: a thin layer over the functions of :mod:`selfsup`.

Every config key is a flag ``--section.key VALUE`` (``--train.epochs 5``), the most used
ones also short (``--epochs 5``); flags override ``--config FILE.yaml``. Errors caused
by input are one line on stderr and a non-zero exit; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import SECTIONS, SHORT_FLAGS, field_types
from .errors import SelfsupError

_PREFIX = "cfg:"


def _add_config_flags(parser: argparse.ArgumentParser, sections: Sequence[str], short: bool) -> None:
    group = parser.add_argument_group("config keys (override --config)")
    for section in sections:
        for key, tp in field_types(section).items():
            dotted = f"{section}.{key}"
            names = [f"--{dotted}"]
            if "_" in key:
                names.append(f"--{section}.{key.replace('_', '-')}")
            if short:
                names += [f"--{s}" for s, target in SHORT_FLAGS.items() if target == dotted]
            kwargs: dict[str, Any] = dict(dest=_PREFIX + dotted, default=argparse.SUPPRESS, metavar="V")
            if tp is bool:
                kwargs.update(nargs="?", const="true", metavar="BOOL")
            group.add_argument(*names, **kwargs)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k[len(_PREFIX) :]: v for k, v in vars(args).items() if k.startswith(_PREFIX)}


def build_parser() -> argparse.ArgumentParser:
    """The ``selfsup`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(prog="selfsup", description="Self-supervised representation learning.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "pretrain",
        help="train an encoder (then evaluate it)",
        description="Pretrain an encoder; every config key is a flag.",
    )
    p.add_argument("--config", metavar="FILE.yaml", help="a recipe (see configs/)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/<method>-<backbone>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete the run in --out and start over")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    _add_config_flags(p, list(SECTIONS), short=True)

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
    e.add_argument("--debug", action="store_true", help="show tracebacks")
    _add_config_flags(e, ["eval"], short=False)
    return parser


def _warning_line(message: Any, category: type[Warning], filename: str, lineno: int, line: Any = None) -> str:
    return f"selfsup: warning: {message}\n"


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from .config import load_config
    from .train import pretrain
    from .train.rundir import is_run_dir, load_run_config

    overrides = _overrides(args)
    if args.resume and args.out and is_run_dir(Path(args.out)) and not args.config and not overrides:
        cfg = load_run_config(Path(args.out))  # plain --resume: the run's own settings
    else:
        cfg = load_config(args.config, overrides)
    result = pretrain(cfg, out=args.out, resume=args.resume, overwrite=args.overwrite)
    print(f"run directory: {result.run_dir}")
    if result.metrics:
        m = result.metrics
        print(f"kNN top-1: {m['knn_top1']:.4f}   linear top-1: {m['linear_top1']:.4f}   (test images: {m['n_test']})")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .eval import evaluate_run

    evaluate_run(args.run_dir, _overrides(args), device=args.device, random_init=args.random_init)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``selfsup`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    warnings.formatwarning = _warning_line  # type: ignore[assignment]
    debug = getattr(args, "debug", False)
    commands = {"pretrain": _cmd_pretrain, "eval": _cmd_eval}
    try:
        return commands[args.command](args)
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
