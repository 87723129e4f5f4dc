"""Device, precision and thread settings shared by training and evaluation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; otherwise the named device, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but no CUDA device is available (use auto or cpu)")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"train.device: unsupported device type {device.type!r} (use cpu or cuda)")
    return device


def to_device(t: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A host tensor on ``device`` without making the host wait for the GPU.

    A "non-blocking" copy from ordinary (pageable) host memory is staged synchronously:
    the host waits until the GPU has finished all the work queued before it, so a small
    copy in the middle of a step stops the host from queueing the next kernels while the
    GPU runs the last ones. From pinned memory the copy is truly asynchronous (PyTorch's
    pinned-memory cache keeps the buffer until the copy is done). On a CPU this is ``.to``.

    Args:
        t: A tensor (on the host; one already on ``device`` is returned as it is).
        device: Where it goes.
        dtype: Its dtype there (None: unchanged).
    """
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
        return t.to(device, dtype, non_blocking=True)
    return t.to(device, dtype)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (so autocast pays off)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, c, lambda: False)()) for c in checks)


def use_bf16(precision: str, device: torch.device) -> bool:
    """Resolve train.precision ('auto', 'bf16', 'fp32') for ``device``."""
    if precision == "auto":
        return native_bf16(device)
    return precision == "bf16"


@contextlib.contextmanager
def autocast(device: torch.device, bf16: bool) -> Iterator[None]:
    """bf16 autocast on ``device`` when ``bf16``, else a no-op."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        yield


def set_threads(num_threads: int | None) -> None:
    """Set PyTorch's intra-op CPU threads (None keeps the default)."""
    if num_threads is not None:
        torch.set_num_threads(num_threads)


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 63-bit seed for ``step`` of a run: randomness is a function of (seed, step).

    Deriving every step's randomness from its index, rather than carrying one generator
    forward, makes a resumed run draw exactly what an uninterrupted one would.
    """
    x = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB) & (2**64 - 1)
    # splitmix64 finaliser: nearby (seed, step) pairs give unrelated seeds.
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (x ^ (x >> 31)) & (2**63 - 1)
