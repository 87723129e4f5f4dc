"""Sweep cells as Ray tasks: ``selfsup sweep SPEC --launcher ray``.

Each cell that is not done becomes one task on the cluster that ``--ray-address`` (or
``$RAY_ADDRESS``) names, or on a local Ray started for the sweep; a task asks for its
CPUs (``train.num_threads``, or 1) and, where the cluster has GPUs, one GPU. A task runs
exactly what the local launcher runs for the cell (:func:`selfsup.lab.sweep.run_cell`),
into the same run directory, so the run directories must lie on a filesystem that every
node sees. A cell whose worker dies is retried by Ray and resumes from its checkpoint;
one that still fails is reported, and running the sweep again continues it. Results,
tables and reports are then written exactly as with the local launcher.

Cells that start from the sweep's encoder of their seed (fine-tuning rows, ``model.init:
"@encoder"``) wait for one task that pretrains that encoder: without it, every such cell
would try to pretrain the shared encoder at once, and all but one would be refused its
lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import ConfigError, SelfsupError

#: ``run_cell(spec, cell, cfg, folder, scale, log)``, the sweep's own (passed in, so that
#: this module does not import the sweep that imports it).
RunCell = Callable[[Any, Any, Config, Path, "str | None", Callable[[str], None]], None]
#: ``ensure_encoder(spec, seed, folder, scale, log)``: pretrain (or continue) a seed's encoder.
EnsureEncoder = Callable[[Any, int, Path, "str | None", Callable[[str], None]], Any]


def _task(run_cell: RunCell, spec: Any, cell: Any, cfg: Config, folder: Path, scale: str | None, *after: Any) -> str:
    """What a Ray worker runs: one cell, its progress bar off (worker output is a log).

    ``after`` holds the results of the tasks the cell waits for (its encoder's); Ray runs
    the cell only once they are done.
    """
    cfg = replace(cfg, train=replace(cfg.train, progress=False))
    run_cell(spec, cell, cfg, folder, scale, lambda _msg: None)
    return str(cell.dir.name)


def _encoder_task(ensure: EnsureEncoder, spec: Any, seed: int, folder: Path, scale: str | None) -> int:
    """What a Ray worker runs for a seed's shared encoder."""
    ensure(spec, seed, folder, scale, lambda _msg: None)
    return seed


@dataclass
class CellBatch:
    """The cells a launcher runs, and what runs them.

    Attributes:
        spec: The sweep spec.
        todo: The cells to run.
        configs: Every cell's config, by its directory.
        folder: The sweep folder.
        scale: The spec's scale profile.
        n_cells: Cells of the whole sweep (the progress bar's total).
        run_cell: Runs one cell (the local launcher's function).
        ensure_encoder: Pretrains (or continues) a seed's encoder.
        encoder_seeds: The directory of each cell that needs its seed's encoder, to that seed.
    """

    spec: Any
    todo: list[Any]
    configs: dict[Path, Config]
    folder: Path
    scale: str | None
    n_cells: int
    run_cell: RunCell
    ensure_encoder: EnsureEncoder | None = None
    encoder_seeds: dict[Path, int] = field(default_factory=dict)


def run_cells_on_ray(
    batch: CellBatch, address: str | None, cpus: float | None, gpus: float | None, log: Callable[[str], None]
) -> None:
    """Run ``batch.todo`` as Ray tasks (each ``batch.run_cell``) and wait for all of them.

    One ``ensure_encoder`` task per seed of ``batch.encoder_seeds`` runs first, and the
    cells that need that encoder after it. ``cpus`` and ``gpus`` are what each task asks for.

    Raises:
        ConfigError: If Ray is not installed.
        SelfsupError: If some cells failed (after Ray's retries); the others are done.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError("--launcher ray needs Ray: pip install 'selfsup[ray]' (or pip install ray)") from None

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
    try:
        failed = _wait(ray, batch, _submit(ray, batch, cpus, gpus))
    finally:
        if started_here:
            ray.shutdown()
    if failed:
        raise SelfsupError(
            f"{len(failed)} of {len(batch.todo)} cells failed ({failed[0]}); run the sweep again to continue them"
        )
    log(f"{len(batch.todo)} cells ran on Ray")


def _submit(ray: Any, batch: CellBatch, cpus: float | None, gpus: float | None) -> dict[Any, Any]:
    """Submit every cell's task (after its encoder's, which the first such cell submits); future -> cell."""
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    remote, remote_encoder = ray.remote(_task), ray.remote(_encoder_task)
    folder = batch.folder.resolve()
    encoders: dict[int, Any] = {}
    futures: dict[Any, Any] = {}
    for cell in batch.todo:
        cfg = batch.configs[cell.dir]
        options = {
            "num_cpus": cpus if cpus is not None else (cfg.train.num_threads or 1),
            "num_gpus": gpus if gpus is not None else (1 if has_gpus and cfg.train.device != "cpu" else 0),
            "max_retries": 2,  # a worker that dies is retried; the cell resumes from its checkpoint
        }
        after = []
        seed = batch.encoder_seeds.get(cell.dir)
        if seed is not None and batch.ensure_encoder is not None:
            if seed not in encoders:  # the first cell of this encoder submits its task
                task = remote_encoder.options(**options)
                encoders[seed] = task.remote(batch.ensure_encoder, batch.spec, seed, folder, batch.scale)
            after = [encoders[seed]]
        task = remote.options(**options)
        futures[task.remote(batch.run_cell, batch.spec, cell, cfg, folder, batch.scale, *after)] = cell
    return futures


def _wait(ray: Any, batch: CellBatch, futures: dict[Any, Any]) -> list[str]:
    """Wait for every task, with a progress bar; the failed cells, each with its last error line."""
    from tqdm import tqdm

    n, failed = batch.n_cells, []
    with tqdm(total=n, initial=n - len(batch.todo), desc=f"sweep {batch.spec.name} (ray)", unit="cell") as bar:
        pending = list(futures)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(ready[0])
            except Exception as e:  # noqa: BLE001 - a failed cell is reported, the others go on
                failed.append(f"{futures[ready[0]].dir.name}: {str(e).strip().splitlines()[-1][:200]}")
                tqdm.write(f"cell failed: {failed[-1]}")
            bar.update(1)
    return failed
