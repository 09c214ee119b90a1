"""Both analysis notebooks execute against a seeded TimescaleDB and draw their plots."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.fixtures.dash import seed_fleet
from tests.fixtures.dash_notebooks import NOTEBOOKS, install_kernelspec, run_notebook

FIGURES = {
    "fleet_utilisation": ["utilisation_by_pool.png", "free_vram_by_gpu_type.png"],
    "reliability": ["reliability_rolling.png"],
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow(12)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_and_plots(
    name: str, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_fleet(db_url, days=7, step=timedelta(minutes=15))
    install_kernelspec(tmp_path / "jupyter")
    figures = tmp_path / "figures"
    figures.mkdir()
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("FLEETPULSE_DATABASE_URL", db_url)
    monkeypatch.setenv("FLEETPULSE_NOTEBOOK_FIGURES", str(figures))

    executed = run_notebook(name)

    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    if name == "fleet_utilisation":
        assert "of 6 agents in" in text
    else:
        assert "status transitions of 6 agents" in text
    assert any("text/html" in o.get("data", {}) for o in outputs), "no table rendered"
    for figure in FIGURES[name]:
        png = (figures / figure).read_bytes()
        assert png.startswith(PNG_MAGIC)
        assert len(png) > 10_000, f"{figure} looks empty"
