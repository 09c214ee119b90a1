"""The errors → HTTP mapping: one error shape for every domain error."""

from __future__ import annotations

import msgspec
from litestar.testing import RequestFactory

from fleetpulse.api.errors import EXCEPTION_HANDLERS
from fleetpulse.errors import NotFound, ServiceUnavailable, StoreError


def test_domain_errors_map_to_one_error_shape() -> None:
    request = RequestFactory().get("/api/v1/agents")
    cases = [
        (NotFound("no agent x"), 404),
        (ServiceUnavailable("database", "postgresql://db", "refused", "start it"), 503),
        (StoreError("refused"), 500),
        (RuntimeError("boom"), 500),
    ]
    for exc, status in cases:
        handler = next(
            h for t, h in EXCEPTION_HANDLERS.items() if isinstance(t, type) and isinstance(exc, t)
        )
        response = handler(request, exc)  # type: ignore[arg-type, operator]
        assert response.status_code == status
        body = msgspec.to_builtins(response.content)
        assert body["status_code"] == status
        assert body["detail"]
        assert "boom" not in body["detail"]
