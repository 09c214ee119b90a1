"""The one error root of fleetpulse.

::

    FleetpulseError
    ├── ConfigError          a setting that does not parse; stops the process at start
    ├── MessageError         a message that breaks the wire contract (dead-lettered)
    ├── ServiceUnavailable   a broker or database that cannot be reached (retryable)
    ├── StoreError           the database refused an operation
    │   └── PoisonRowError   one row makes the database refuse its whole batch
    └── NotFound             an agent or resource that does not exist
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FleetpulseError",
    "MessageError",
    "NotFound",
    "PoisonRowError",
    "ServiceUnavailable",
    "StoreError",
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
