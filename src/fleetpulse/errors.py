"""The one error root of fleetpulse.

::

    FleetpulseError
    ├── ConfigError          a setting that does not parse; stops the process at start
    ├── MessageError         a message that breaks the wire contract (dead-lettered)
    ├── ServiceUnavailable   a broker or database that cannot be reached (retryable)
    ├── StoreError           the database refused an operation
    │   └── PoisonRowError   one row makes the database refuse its whole batch
    ├── NotFound             an agent or resource that does not exist
    │   └── ApiNotFound      ... as the HTTP API answered it (404; also an ApiError)
    ├── Conflict             a request the current state cannot honour (nothing fits)
    │   └── ApiConflict      ... as the HTTP API answered it (409; also an ApiError)
    └── ApiError             the HTTP API answered an error (``status_code``, server's ``detail``)
        ├── BadRequest       400: a parameter is malformed or out of range
        ├── Unauthorized     401: missing or wrong bearer token
        └── ApiUnavailable   502/503/504: the API or its database is down (retryable)
"""

from __future__ import annotations

__all__ = [
    "ApiConflict",
    "ApiError",
    "ApiNotFound",
    "ApiUnavailable",
    "BadRequest",
    "ConfigError",
    "Conflict",
    "FleetpulseError",
    "MessageError",
    "NotFound",
    "PoisonRowError",
    "ServiceUnavailable",
    "StoreError",
    "Unauthorized",
]


class FleetpulseError(Exception):
    """Root of every error fleetpulse raises on purpose."""


class ConfigError(FleetpulseError):
    """A setting is missing or does not parse; the message names it and its value."""


class MessageError(FleetpulseError):
    """A message breaks the wire contract; ``reason`` is short and stable for metrics."""

    def __init__(self, detail: str, *, reason: str = "invalid") -> None:
        super().__init__(detail)
        self.detail = detail
        self.reason = reason


class ServiceUnavailable(FleetpulseError):
    """A service cannot be reached. The message names the URL (password masked) and the fix."""

    def __init__(self, service: str, url: str, cause: str, hint: str) -> None:
        super().__init__(f"{service} at {url} is unreachable ({cause}); {hint}")
        self.service = service
        self.url = url


class StoreError(FleetpulseError):
    """The database refused an operation for a reason retrying will not fix."""


class PoisonRowError(StoreError):
    """A batch was refused because of its content, not the connection."""


class NotFound(FleetpulseError):
    """The thing asked for does not exist."""


class Conflict(FleetpulseError):
    """A request the current state cannot honour (a claim that does not fit, a claim that
    has ended); the message says why."""


class ApiError(FleetpulseError):
    """The HTTP API answered an error; the message is the server's ``detail``."""

    def __init__(self, status_code: int, detail: str, *, url: str = "") -> None:
        super().__init__(f"{detail} (HTTP {status_code}{' from ' + url if url else ''})")
        self.status_code = status_code
        self.detail = detail
        self.url = url


class BadRequest(ApiError):
    """400: the server names the offending parameter in ``detail``."""


class Unauthorized(ApiError):
    """401: the API wants a bearer token (``token=`` / ``--token``) it accepts."""


class ApiNotFound(ApiError, NotFound):
    """404: no agent (or claim) with this id."""


class ApiConflict(ApiError, Conflict):
    """409: e.g. a claim on capacity that someone else took meanwhile. Catch it (or
    ``Conflict``) and ask for capacity again."""


class ApiUnavailable(ApiError):
    """502, 503 or 504: the API, or the database behind it, is down for now."""
