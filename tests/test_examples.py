"""The Colab notebook in examples/ runs top to bottom (on the CPU, with a tiny setting), so it cannot rot."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, tiny_overrides

NOTEBOOK = REPO / "examples" / "colab.ipynb"


def _outputs(nb: object) -> str:
    text = []
    for cell in nb.cells:  # type: ignore[attr-defined]
        for out in cell.get("outputs", []):
            text.append(out.get("text", "") or "".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(text)


def test_notebook_has_one_parameters_cell() -> None:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "INSTALL = True" in tagged[0].source and "SELFSUP_REPO" in tagged[0].source


@pytest.mark.slow
def test_colab_notebook_runs_top_to_bottom(shared_folder: Path, tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    where = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    tiny = tiny_overrides(shared_folder, **{"train.epochs": 1, "finetune.val_size": 6, "finetune.batch_size": 8})
    tiny["train.eval_after"] = True
    tiny["eval.linear_epochs"] = 2
    settings = (
        "INSTALL = False\n"
        f"RECIPE = {str(REPO / 'configs' / 'quick.yaml')!r}\n"
        "EPOCHS = 1\nLABELS = 12\nFINETUNE_EPOCHS = 2\n"
        f"OUT = {str(tmp_path / 'run')!r}\n"
        f"OVERRIDES = {tiny!r}\n"
        "REPORT_SAMPLES = 24\n"
    )
    nb.cells.insert(where + 1, nbformat.v4.new_code_cell(settings))  # as papermill injects parameters
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})  # fmt: skip
    client.execute()
    text = _outputs(nb)
    assert "kNN top-1" in text and "linear top-1" in text
    assert "12 labels: pretrained encoder" in text and "from scratch" in text
    assert (tmp_path / "run" / "report.html").is_file()
    assert any((tmp_path / "run" / "report").glob("*.png"))
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the report's figures are shown"
