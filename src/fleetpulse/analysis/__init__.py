"""Fleet history in polars: loaders, utilisation, free VRAM, incidents, reliability, export.

Loaders read TimescaleDB (connectorx or ADBC); everything else is a pure function of
DataFrames, so notebooks and tests can feed it any history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what mypy and readers see; the same names, loaded on first use, below
    from fleetpulse.analysis.export import (
        export_samples as export_samples,
        run_export as run_export,
    )
    from fleetpulse.analysis.fleet import (
        free_vram_percentiles as free_vram_percentiles,
        utilisation_by_pool as utilisation_by_pool,
    )
    from fleetpulse.analysis.load import (
        DEFAULT_ENGINE as DEFAULT_ENGINE,
        ENGINES as ENGINES,
        Engine as Engine,
        load_agent_samples as load_agent_samples,
        load_gpu_samples as load_gpu_samples,
        load_registry as load_registry,
        load_status_events as load_status_events,
        read_sql as read_sql,
        utc as utc,
    )
    from fleetpulse.analysis.reliability import (
        RELIABILITY_WINDOW as RELIABILITY_WINDOW,
        offline_incidents as offline_incidents,
        reliability as reliability,
        rolling_reliability as rolling_reliability,
        status_intervals as status_intervals,
    )
else:
    from fleetpulse._lazy import lazy_face

    __all__, __getattr__, __dir__ = lazy_face(
        __name__,
        {
            "export": "export_samples run_export",
            "fleet": "free_vram_percentiles utilisation_by_pool",
            "load": (
                "DEFAULT_ENGINE ENGINES Engine load_agent_samples load_gpu_samples load_registry "
                "load_status_events read_sql utc"
            ),
            "reliability": (
                "RELIABILITY_WINDOW offline_incidents reliability rolling_reliability "
                "status_intervals"
            ),
        },
    )
