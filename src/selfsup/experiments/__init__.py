"""Experiments: sweeps over config grids, results tables, HTML reports."""

from .results import markdown_table
from .sweep import SweepResult, load_spec, run_sweep

__all__ = ["SweepResult", "load_spec", "markdown_table", "run_sweep"]
