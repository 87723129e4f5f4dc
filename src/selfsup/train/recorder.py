"""Where a run's numbers go: metrics.jsonl, TensorBoard and the progress bar, in one object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..rundir import METRICS_JSONL, append_jsonl


class Recorder:
    """Logs every scalar of a record to metrics.jsonl and TensorBoard, and shows progress.

    Interval records (``loss``, ``lr``, ``views_per_s`` and whatever else the method
    returned) go to TensorBoard as ``train/<name>`` against the step; epoch records
    (``epoch_loss``, ``epoch_<name>``, ``knn_top1``) as ``epoch/<name>`` against the
    epoch. On ranks other than 0 it records nothing.

    Args:
        run_dir: The run directory.
        step: The step training starts from (TensorBoard hides later events of a
            killed run: they are replayed).
        total: Steps in the whole run (for the progress bar).
        description: The progress bar's label.
        active: Rank 0: write files.
        progress: Show a progress bar.
    """

    def __init__(
        self, run_dir: Path, step: int, total: int, description: str, active: bool = True, progress: bool = True
    ) -> None:
        from tqdm import tqdm

        self.path = run_dir / METRICS_JSONL
        self.active = active
        self.board = _tensorboard(run_dir, step) if active else None
        self.bar = tqdm(
            total=total,
            initial=step,
            disable=not (progress and active),
            unit="step",
            dynamic_ncols=True,
            desc=description,
            leave=True,
        )

    def set_total(self, total: int) -> None:
        """A new end of the run (a re-planned time budget) for the progress bar."""
        self.bar.total = total
        self.bar.refresh()

    def advance(self) -> None:
        """One more step done."""
        self.bar.update(1)

    def record(self, entry: dict[str, Any]) -> None:
        """Append ``entry`` to metrics.jsonl and its numbers to TensorBoard."""
        if not self.active:
            return
        append_jsonl(self.path, entry)
        if self.board is not None:
            epoch_entry = "epoch_loss" in entry
            x = entry["epoch"] if epoch_entry else entry["step"]
            for key, value in entry.items():
                if key not in ("step", "epoch", "train_time_s") and isinstance(value, (int, float)):
                    self.board.add_scalar(f"{'epoch' if epoch_entry else 'train'}/{key}", value, x)

    def show(self, **values: str) -> None:
        """Numbers beside the progress bar."""
        self.bar.set_postfix(values, refresh=False)

    def write(self, line: str) -> None:
        """A line above the progress bar."""
        if self.active:
            self.bar.write(line)

    def close(self) -> None:
        """Close the bar and the TensorBoard file."""
        self.bar.close()
        if self.board is not None:
            self.board.close()


def _tensorboard(run_dir: Path, step: int) -> Any:
    """A TensorBoard writer for ``run_dir/tensorboard`` (None if tensorboard is missing).

    ``purge_step`` hides events a killed run logged after the checkpoint it resumes from.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=step or None)
