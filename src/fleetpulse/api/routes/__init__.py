"""Route handlers of the HTTP API."""

from fleetpulse.api.routes.agents import AgentRoutes
from fleetpulse.api.routes.claims import ClaimRoutes
from fleetpulse.api.routes.cordons import CordonRoutes
from fleetpulse.api.routes.events import EventRoutes
from fleetpulse.api.routes.system import SystemRoutes

__all__ = ["AgentRoutes", "ClaimRoutes", "CordonRoutes", "EventRoutes", "SystemRoutes"]
