"""fleetpulse.console: the API from the shell (``fleetpulse status | capacity | events``),
through :mod:`fleetpulse.client`."""

from fleetpulse.console.commands import (
    CapacityQuery,
    api_url_of,
    run_capacity,
    run_events,
    run_status,
)
from fleetpulse.console.tables import capacity_table, event_line, fleet_table, pool_summary

__all__ = [
    "CapacityQuery",
    "api_url_of",
    "capacity_table",
    "event_line",
    "fleet_table",
    "pool_summary",
    "run_capacity",
    "run_events",
    "run_status",
]
