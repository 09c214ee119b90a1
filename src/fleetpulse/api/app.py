"""``create_app``: the Litestar application, its lifespan and middleware."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from fleetpulse import __version__
from fleetpulse.api.auth import bearer_auth_middleware
from fleetpulse.api.errors import EXCEPTION_HANDLERS
from fleetpulse.api.metrics import RequestMetrics, request_metrics_middleware
from fleetpulse.api.routes import (
    AgentRoutes,
    ClaimRoutes,
    CordonRoutes,
    EventRoutes,
    SystemRoutes,
)
from fleetpulse.api.services import open_services
from fleetpulse.config import Settings

__all__ = ["create_app"]


def create_app(settings: Settings, *, debug: bool = False) -> Litestar:
    """The API app; its lifespan opens the database and the background readers."""
    request_metrics = RequestMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_services(settings, request_metrics) as services:
            app.state.services = services
            try:
                yield
            finally:
                services.feed.close_all()

    middleware: list[Any] = [request_metrics_middleware(request_metrics)]
    security: list[dict[str, list[str]]] | None = None
    components = Components()
    api = settings.api
    if api.auth_tokens or api.write_tokens:
        middleware.append(bearer_auth_middleware(api.auth_tokens, api.write_tokens))
        components = Components(
            security_schemes={
                "read": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="A read token (api.auth_tokens) or a write token.",
                ),
                "write": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="A write token (api.write_tokens): claims and cordons.",
                ),
            }
        )
        # Reading takes either kind; routes that change something ask for a write token.
        security = [{"read": []}, {"write": []}]
    openapi = OpenAPIConfig(
        title="fleetpulse",
        version=__version__,
        description="Who is alive in the fleet and what each agent can take right now.",
        path="/schema",
        render_plugins=[SwaggerRenderPlugin(), JsonRenderPlugin()],
        components=components,
        security=security,
        create_examples=False,
        use_handler_docstrings=False,
    )
    app = Litestar(
        route_handlers=[SystemRoutes, AgentRoutes, ClaimRoutes, CordonRoutes, EventRoutes],
        lifespan=[lifespan],
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=openapi,
        # the process's logging is the CLI's (--log-format); Litestar's default would
        # replace the root handler with its own text format
        logging_config=None,
        debug=debug,
    )
    if security is not None:
        _writes_need_write_tokens(app)
    return app


def _writes_need_write_tokens(app: Litestar) -> None:
    """In the OpenAPI document, operations that change something ask for a write token."""
    for item in (app.openapi_schema.paths or {}).values():
        for method in ("post", "put", "patch", "delete"):
            operation = getattr(item, method, None)
            if operation is not None:
                operation.security = [{"write": []}]
