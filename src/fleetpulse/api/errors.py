"""Errors to HTTP, in one place: every error answer is an :class:`ErrorBody`."""

from __future__ import annotations

import logging
from typing import Any, Final

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap

from fleetpulse.api.schemas import ErrorBody
from fleetpulse.errors import Conflict, FleetpulseError, NotFound, ServiceUnavailable

__all__ = ["EXCEPTION_HANDLERS", "BadParameter", "error_responses"]

log = logging.getLogger(__name__)

RETRY_AFTER_S: Final = "5"


class BadParameter(ValidationException):
    """A parameter that parsed but makes no sense (reversed range, too many points...)."""

    def __init__(self, name: str, problem: str, *, source: str = "query") -> None:
        super().__init__(
            detail=f"invalid {source} parameter {name!r}: {problem}",
            extra=[{"key": name, "source": source, "message": problem}],
        )


def _body(
    status: int, detail: str, extra: Any = None, headers: dict[str, str] | None = None
) -> Response[ErrorBody]:
    listed = extra if isinstance(extra, list) else ([extra] if isinstance(extra, dict) else None)
    return Response(
        ErrorBody(status_code=status, detail=detail, extra=listed),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


# Parameters whose name on the wire differs from the handler's argument.
WIRE_NAMES: Final = {"last_event_id": "Last-Event-ID"}


def _wire(entry: dict[str, Any]) -> dict[str, Any]:
    source = entry.get("source", "query")
    source = str(getattr(source, "value", source)).lower()
    key = str(entry["key"])
    return {**entry, "key": WIRE_NAMES.get(key, key), "source": source}


def _validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorBody]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    named = [_wire(e) for e in extra if isinstance(e, dict) and e.get("key")]
    if named and exc.detail.startswith("Validation failed"):
        parts = [
            f"invalid {e['source']} parameter {e['key']!r}: {e.get('message', 'invalid')}"
            for e in named
        ]
        detail = "; ".join(parts)
    else:
        detail = exc.detail
    return _body(400, detail, named or None)


def _http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    return _body(exc.status_code, exc.detail, exc.extra, dict(exc.headers or {}) or None)


def _not_found(request: Request[Any, Any, Any], exc: NotFound) -> Response[ErrorBody]:
    return _body(404, str(exc))


def _conflict(request: Request[Any, Any, Any], exc: Conflict) -> Response[ErrorBody]:
    return _body(409, str(exc))


def _unavailable(request: Request[Any, Any, Any], exc: ServiceUnavailable) -> Response[ErrorBody]:
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return _body(503, str(exc), headers={"Retry-After": RETRY_AFTER_S})


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    if isinstance(exc, FleetpulseError):
        return _body(500, f"internal error: {exc}")
    return _body(500, "internal error")


EXCEPTION_HANDLERS: Final[ExceptionHandlersMap] = {
    ValidationException: _validation,
    HTTPException: _http,
    NotFound: _not_found,
    Conflict: _conflict,
    ServiceUnavailable: _unavailable,
    Exception: _internal,
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error answers a route can give."""
    text = {
        400: "A parameter is malformed or out of range; `detail` names it.",
        401: "Missing or wrong bearer token (only when the API is configured with tokens).",
        403: "A read token was presented for a change; changes need a write token.",
        404: "No agent (or claim) with this id.",
        409: "The request cannot be honoured now; `detail` says why (e.g. nothing fits).",
        503: "The database cannot be reached.",
    }
    return {
        code: ResponseSpec(
            data_container=ErrorBody, description=text[code], generate_examples=False
        )
        for code in codes
    }
