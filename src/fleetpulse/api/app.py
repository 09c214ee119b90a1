"""``create_app``: the Litestar application, its lifespan and middleware."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Final

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

REQUEST_BODIES: Final = frozenset({"ClaimBody", "ClaimFilter", "RenewBody", "CordonBody"})


def create_app(settings: Settings, *, debug: bool = False) -> Litestar:
    """The API app; its lifespan opens the database and the background readers."""
    request_metrics = RequestMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        _finish_openapi(app, writes_need_tokens=security is not None)
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
    return Litestar(
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


def _finish_openapi(app: Litestar, *, writes_need_tokens: bool) -> None:
    """What the document cannot say by itself: request bodies refuse unknown fields (a
    misspelt amount must not claim nothing), and with tokens, operations that change
    something ask for a write token. Done once at start, before anything is served."""
    schema = app.openapi_schema
    for name, component in (schema.components.schemas or {}).items():
        if name in REQUEST_BODIES:
            component.additional_properties = False
    if not writes_need_tokens:
        return
    for item in (schema.paths or {}).values():
        for method in ("post", "put", "patch", "delete"):
            operation = getattr(item, method, None)
            if operation is not None:
                operation.security = [{"write": []}]
