"""fleetpulse.api: the capacity API and its Prometheus exporter."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what mypy and readers see; the same names, loaded on first use, below
    from fleetpulse.api.app import create_app as create_app
    from fleetpulse.api.server import run_api as run_api
else:
    from fleetpulse._lazy import lazy_face

    __all__, __getattr__, __dir__ = lazy_face(
        __name__,
        {
            "app": "create_app",
            "server": "run_api",
        },
    )
