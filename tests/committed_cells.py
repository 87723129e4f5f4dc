"""Print the status of every committed sweep cell under ROOT/results as JSON (read-only).

``python tests/committed_cells.py ROOT``: for each folder with a ``sweep.yaml``, its cells
as the sweep judges them (done, partial, missing, or changed with the keys), from the
spec in ROOT/configs that the folder names. Nothing is written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from selfsup.lab.records import cell_state
from selfsup.lab.sweep import SPEC_FILE, _cell_configs, cells, load_spec, record_config


def folder_statuses(folder: Path, root: Path) -> dict[str, str] | str:
    """The cells of one sweep folder by name, or why they cannot be read."""
    raw = yaml.safe_load((folder / SPEC_FILE).read_text())
    named = str(raw["spec"])
    spec_path = root / named[named.index("configs/") :] if "configs/" in named else root / named
    if not spec_path.is_file():
        return f"spec missing: {named}"
    spec, scale = load_spec(spec_path), raw.get("use_scale")
    all_cells = cells(spec, folder, scale)
    configs = _cell_configs(spec, all_cells, scale)
    out = {}
    for c in all_cells:
        state = cell_state(c.dir, c.command, record_config(spec, c, configs[c.dir], scale))
        out[c.dir.name] = state.status + (f" {list(state.changes)[:3]}" if state.status == "changed" else "")
    return out


def main(root: Path) -> dict[str, Any]:
    """Every committed sweep folder's cells."""
    return {p.parent.name: folder_statuses(p.parent, root) for p in sorted(root.glob(f"results/*/{SPEC_FILE}"))}


if __name__ == "__main__":
    json.dump(main(Path(sys.argv[1])), sys.stdout, indent=1, sort_keys=True)
