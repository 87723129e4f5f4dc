"""Which machine computed a result: the record every run keeps in ``RUN_DIR/machine.json``.

Accuracy depends on a run's steps, seed and precision; its wall time and views/s depend
on the machine as well. So every process that trains, evaluates or fine-tunes in a run
directory appends one entry to ``machine.json``: what it did, how long it took, and the
machine (CPU model and instruction set, GPU, PyTorch, the selfsup commit). A run resumed
on another machine has one entry per machine, and a results table can tell which wall
times may be compared (those of one machine) and which may not.

>>> from selfsup.machine import machine_info
>>> machine_info()["label"]
'AMD EPYC (Zen 3), 2 cores, AVX2'
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .fileio import write_atomic

MACHINE_JSON = "machine.json"

#: (vendor, cpu family, model range) -> microarchitecture, for the CPUs this project meets.
#: /proc/cpuinfo names virtual EPYCs only "AMD EPYC"; family and model tell Zen 3/4/5 apart.
_AMD_CORES = (
    (25, range(0x00, 0x10), "Zen 3"),
    (25, range(0x20, 0x60), "Zen 3"),
    (25, range(0x10, 0x20), "Zen 4"),
    (25, range(0x60, 0x80), "Zen 4"),
    (25, range(0xA0, 0xB0), "Zen 4"),
    (26, range(0x00, 0x100), "Zen 5"),
)


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def _isa(flags: set[str]) -> str:
    """The widest vector instruction set, as the speed figures of the docs name it."""
    if "amx_bf16" in flags:
        return "AMX bf16"
    if "avx512_bf16" in flags:
        return "AVX-512 bf16"
    if "avx512f" in flags:
        return "AVX-512"
    if "avx2" in flags:
        return "AVX2"
    return platform.machine() or "unknown"


def _core_name(info: dict[str, str]) -> str | None:
    if info.get("vendor_id") != "AuthenticAMD":
        return None
    try:
        family, model = int(info.get("cpu family", "")), int(info.get("model", ""))
    except ValueError:
        return None
    return next((name for fam, models, name in _AMD_CORES if fam == family and model in models), None)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def _git_commit() -> tuple[str | None, bool | None]:
    """(commit, has uncommitted changes) of the checkout selfsup runs from, or (None, None).

    Read once per process: call :func:`note_commit` when a long job starts, so that
    edits made to the checkout while it runs are not blamed on it.
    """
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None, None
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return head or None, bool(status.strip())


def note_commit() -> None:
    """Read the checkout's commit now (at the start of a run), for every later record of this process."""
    _git_commit()


def machine_info(device: Any = None) -> dict[str, Any]:
    """The machine this process runs on.

    Args:
        device: The torch device the work ran on (a GPU's name is recorded for CUDA).

    Returns:
        ``label`` (one line: CPU, microarchitecture where known, cores, instruction set,
        GPU), ``cpu``, ``cpu_family``/``cpu_model``, ``cores``, ``isa``, ``bf16_native``,
        ``gpu``, ``torch``, ``selfsup``, ``python``, ``commit`` and ``dirty`` (uncommitted
        changes under src/ when it ran).
    """
    import torch

    from .runtime import native_bf16
    from .version import __version__

    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    cpu = info.get("model name") or platform.processor() or platform.machine()
    core = _core_name(info)
    gpu = None
    if device is not None and torch.device(device).type == "cuda":
        gpu = torch.cuda.get_device_name(torch.device(device))
    isa = _isa(flags)
    label = f"{cpu}{f' ({core})' if core else ''}, {_cores()} cores, {isa}" + (f", {gpu}" if gpu else "")
    commit, dirty = _git_commit()
    return {
        "label": label,
        "cpu": cpu,
        "cpu_family": info.get("cpu family"),
        "cpu_model": info.get("model"),
        "microarchitecture": core,
        "cores": _cores(),
        "isa": isa,
        "bf16_native": native_bf16(torch.device("cpu")),
        "gpu": gpu,
        "torch": torch.__version__,
        "selfsup": __version__,
        "python": platform.python_version(),
        "commit": commit,
        "dirty": dirty,
    }


def record_machine(run_dir: str | Path, what: str, seconds: float, device: Any = None, **details: Any) -> None:
    """Append one entry to ``RUN_DIR/machine.json``: what was done, on which machine, how long.

    Args:
        run_dir: The run directory.
        what: 'train', 'eval', 'finetune', ...
        seconds: Wall time of that work in this process.
        device: The torch device it ran on.
        **details: More fields (steps trained, precision, ...).
    """
    path = Path(run_dir) / MACHINE_JSON
    entries = read_machine(path.parent)
    entries.append(
        {
            "what": what,
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "seconds": round(float(seconds), 3),
            "command": command_line(),
            **details,
            **machine_info(device),
        }
    )
    write_atomic(path, (json.dumps({"entries": entries}, indent=2) + "\n").encode())


def command_line() -> str:
    """The command this process runs, as typed (``selfsup pretrain --config ...``)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("selfsup", "__main__.py"):
        argv[0] = "selfsup"
    return " ".join(shlex.quote(a) for a in argv)


def read_machine(run_dir: str | Path) -> list[dict[str, Any]]:
    """The entries of ``RUN_DIR/machine.json``, oldest first ([] when there is none)."""
    path = Path(run_dir) / MACHINE_JSON
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text()).get("entries", []))
    except (json.JSONDecodeError, AttributeError):
        return []


def training_machine(run_dir: str | Path) -> dict[str, Any] | None:
    """The entry of the machine that trained (the last 'train' entry), else the last entry, else None."""
    entries = read_machine(run_dir)
    trained = [e for e in entries if e.get("what") == "train"]
    chosen = trained or entries
    return chosen[-1] if chosen else None
