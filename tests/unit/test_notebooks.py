"""The notebooks are jupytext pairs: each .ipynb holds the same cells as its .py script."""

from __future__ import annotations

import jupytext
import nbformat
import pytest

from tests.fixtures.dash_notebooks import NOTEBOOK_DIR, NOTEBOOKS


def cells(notebook: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in notebook.cells]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_pair_is_in_sync(name: str) -> None:
    script = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
    notebook = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    assert cells(script) == cells(notebook), f"run: jupytext --sync notebooks/{name}.py"
    assert notebook.metadata["jupytext"]["formats"] == "ipynb,py:percent"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_no_outputs(name: str) -> None:
    notebook = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code
    assert all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_uses_fleetpulse_analysis_and_the_agg_backend(name: str) -> None:
    source = (NOTEBOOK_DIR / f"{name}.py").read_text()
    assert "from fleetpulse import analysis" in source
    assert 'matplotlib.use("Agg")' in source
    assert "FLEETPULSE_DATABASE_URL" in source
