"""What both clients are built from: the constructor arguments, checked once."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from fleetpulse import __version__
from fleetpulse.errors import ConfigError, ServiceUnavailable
from fleetpulse.lifecycle import Backoff

__all__ = ["DEFAULT_URL", "Options", "log"]

DEFAULT_URL: Final = "http://127.0.0.1:8000"
log = logging.getLogger("fleetpulse.client")


@dataclass(frozen=True, slots=True)
class Options:
    base_url: str = DEFAULT_URL
    token: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0
    retries: int = 2
    retry_backoff_s: float = 0.25
    retry_max_s: float = 5.0
    stream_idle_timeout_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"API base URL must start with http:// or https://: {self.base_url!r}"
            )
        for name in ("timeout_s", "stream_idle_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.retries < 0 or self.retry_backoff_s < 0 or self.retry_max_s < 0:
            raise ConfigError("retries, retry_backoff_s and retry_max_s must not be negative")

    def http(self) -> dict[str, Any]:
        """The arguments of the httpx client (sync or async) the API is called through."""
        return {"base_url": self.base_url, "headers": self.headers(), "timeout": self.timeout()}

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"fleetpulse-client/{__version__}", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout_s)

    def stream_timeout(self) -> httpx.Timeout:
        """The API sends a keepalive comment every ``api.sse_keepalive_s`` (15 s by default);
        a stream silent for longer than ``stream_idle_timeout_s`` is taken as dead."""
        return httpx.Timeout(self.timeout_s, read=self.stream_idle_timeout_s)

    def backoff(self) -> Backoff:
        """The house backoff (capped, exponential, fully jittered): a fleet of dispatchers
        retrying after one outage does not come back in lock-step."""
        return Backoff(self.retry_backoff_s, self.retry_max_s, rng=self.rng)

    def unreachable(self, exc: httpx.TransportError) -> ServiceUnavailable:
        cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return ServiceUnavailable(
            "the fleetpulse API",
            self.base_url,
            cause,
            "start it with 'fleetpulse api' or check the URL (--api-url)",
        )
