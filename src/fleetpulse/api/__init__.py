"""fleetpulse.api: the capacity API, its Prometheus exporter and the fleet table."""

from fleetpulse.api.app import create_app
from fleetpulse.api.server import run_api
from fleetpulse.api.status import run_status

__all__ = ["create_app", "run_api", "run_status"]
