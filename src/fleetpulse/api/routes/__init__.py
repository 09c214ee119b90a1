"""Route handlers of the HTTP API."""

from fleetpulse.api.routes.agents import AgentRoutes
from fleetpulse.api.routes.events import EventRoutes
from fleetpulse.api.routes.system import SystemRoutes

__all__ = ["AgentRoutes", "EventRoutes", "SystemRoutes"]
