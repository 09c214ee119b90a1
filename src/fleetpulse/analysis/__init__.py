"""Fleet history in polars: loaders, utilisation, free VRAM, incidents, reliability, export.

Loaders read TimescaleDB (connectorx or ADBC); everything else is a pure function of
DataFrames, so notebooks and tests can feed it any history.
"""

from fleetpulse.analysis.export import export_samples, run_export
from fleetpulse.analysis.fleet import free_vram_percentiles, utilisation_by_pool
from fleetpulse.analysis.load import (
    DEFAULT_ENGINE,
    ENGINES,
    Engine,
    load_agent_samples,
    load_gpu_samples,
    load_registry,
    load_status_events,
    read_sql,
    utc,
)
from fleetpulse.analysis.reliability import (
    RELIABILITY_WINDOW,
    offline_incidents,
    reliability,
    rolling_reliability,
    status_intervals,
)

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "RELIABILITY_WINDOW",
    "Engine",
    "export_samples",
    "free_vram_percentiles",
    "load_agent_samples",
    "load_gpu_samples",
    "load_registry",
    "load_status_events",
    "offline_incidents",
    "read_sql",
    "reliability",
    "rolling_reliability",
    "run_export",
    "status_intervals",
    "utc",
    "utilisation_by_pool",
]
