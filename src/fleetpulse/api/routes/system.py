"""Health probes and the Prometheus exposition."""

from __future__ import annotations

import time

from litestar import Controller, MediaType, Response, get
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec

from fleetpulse.api.errors import error_responses
from fleetpulse.api.metrics import CONTENT_TYPE
from fleetpulse.api.schemas import Health
from fleetpulse.api.services import services_of
from fleetpulse.errors import FleetpulseError
from fleetpulse.store import ping

__all__ = ["SystemRoutes"]


class SystemRoutes(Controller):
    path = "/"
    tags = ["system"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get("/healthz", summary="The process is up", security=[{}])
    async def healthz(self) -> Health:
        return Health(status="ok")

    @get(
        "/readyz",
        summary="The database answers",
        security=[{}],
        responses={503: ResponseSpec(Health, description="The database does not answer.")},
    )
    async def readyz(self, state: State) -> Response[Health]:
        try:
            async with services_of(state).db.connection() as conn:
                await ping(conn)
        except FleetpulseError as exc:
            return Response(Health(status="unavailable", detail=str(exc)), status_code=503)
        return Response(Health(status="ok"))

    @get(
        "/metrics",
        summary="Prometheus exposition",
        description=(
            "Fleet gauges from a snapshot refreshed every `api.metrics_refresh_interval_s`"
            " (never a query per scrape), then the API's own request metrics."
        ),
        media_type=MediaType.TEXT,
        responses=error_responses(401),
    )
    async def metrics(self, state: State) -> Response[bytes]:
        services = services_of(state)
        age = max(0.0, time.time() - services.fleet_metrics_at)
        snapshot_age = (
            "# HELP fleetpulse_metrics_snapshot_age_seconds Age of the fleet gauges above.\n"
            "# TYPE fleetpulse_metrics_snapshot_age_seconds gauge\n"
            f"fleetpulse_metrics_snapshot_age_seconds {age:.3f}\n"
        ).encode()
        body = services.fleet_metrics + snapshot_age + services.request_metrics.render()
        return Response(body, media_type=CONTENT_TYPE)
