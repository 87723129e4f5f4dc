"""The lab: sweeps over config grids, committed records, results tables, HTML reports, the docs' generator.

It sits on the core (training, evaluation, fine-tuning) and nothing in the core imports it;
its figures, t-SNE maps and TensorBoard logs need the ``lab`` extra
(``pip install -e ".[lab]"``), the Ray launcher the ``ray`` extra. ``python -m
selfsup.lab.docs`` regenerates the generated blocks of a repository's docs from its
``results/`` (a development tool, not a user command).
"""

from .results import markdown_table
from .sweep import SweepOptions, SweepResult, load_spec, run_sweep

__all__ = ["SweepOptions", "SweepResult", "load_spec", "markdown_table", "run_sweep"]
