"""``fleetpulse status | capacity | events``: the API through :mod:`fleetpulse.client`.

Each returns the exit code; an API error or an unreachable API is one line on stderr."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

import msgspec
from rich.console import Console

from fleetpulse.client import Client, Event
from fleetpulse.config import Settings
from fleetpulse.console.tables import capacity_table, event_line, fleet_table, pool_summary
from fleetpulse.errors import ApiError, ServiceUnavailable, Unauthorized

__all__ = ["CapacityQuery", "api_url_of", "run_capacity", "run_events", "run_status"]

PAGE = 10_000
EVENTS_PAGE = 1000


def api_url_of(settings: Settings, api_url: str | None) -> str:
    """``--api-url``, else where this machine's settings say the API listens."""
    if api_url:
        return api_url
    host = settings.api.host
    host = "127.0.0.1" if host in {"0.0.0.0", ""} else f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.api.port}"


def _token(settings: Settings, token: str | None) -> str | None:
    """``--token``, else the first token of this machine's own API settings."""
    return token or (settings.api.auth_tokens[0] if settings.api.auth_tokens else None)


@contextmanager
def _api(settings: Settings, api_url: str | None, token: str | None) -> Iterator[Client]:
    with Client(api_url_of(settings, api_url), token=_token(settings, token)) as client:
        yield client


def _guarded(action: Callable[[], None]) -> int:
    try:
        action()
    except Unauthorized as exc:
        print(f"fleetpulse: {exc}; pass --token", file=sys.stderr)
        return 1
    except (ApiError, ServiceUnavailable) as exc:
        print(f"fleetpulse: {exc}", file=sys.stderr)
        return 1
    return 0


def _console(out: TextIO | None) -> Console:
    return Console(file=out or sys.stdout, width=200, highlight=False)


def run_status(
    settings: Settings, *, api_url: str | None, token: str | None, out: TextIO | None = None
) -> int:
    """The fleet as a table, online first, with a summary by pool."""

    def show() -> None:
        with _api(settings, api_url, token) as api:
            agents = list(api.iter_agents(page_size=PAGE))
        console = _console(out)
        console.print(fleet_table(agents))
        console.print(pool_summary(agents))

    return _guarded(show)


@dataclass(frozen=True, slots=True)
class CapacityQuery:
    """The capacity question as the command line asks it (None: no condition)."""

    min_gpu_vram_gb: float | None = None
    min_cpu_cores: int | None = None
    min_mem_gb: float | None = None
    min_gpu_count: int | None = None
    gpu_type: str | None = None
    pool: str | None = None
    max_sample_age_s: float | None = None
    min_reliability: float | None = None
    limit: int | None = None


def run_capacity(
    settings: Settings,
    query: CapacityQuery,
    *,
    api_url: str | None,
    token: str | None,
    as_json: bool = False,
    out: TextIO | None = None,
) -> int:
    """Online agents that can take a job now: a table, or the API's JSON with ``as_json``."""

    def show() -> None:
        with _api(settings, api_url, token) as api:
            found = api.capacity(
                min_gpu_vram_gb=query.min_gpu_vram_gb,
                min_cpu_cores=query.min_cpu_cores,
                min_mem_gb=query.min_mem_gb,
                min_gpu_count=query.min_gpu_count,
                gpu_type=query.gpu_type,
                pool=query.pool,
                max_sample_age_s=query.max_sample_age_s,
                min_reliability=query.min_reliability,
                limit=query.limit,
            )
        stream = out or sys.stdout
        if as_json:
            stream.write(msgspec.json.format(msgspec.json.encode(found), indent=2).decode() + "\n")
            return
        console = _console(out)
        console.print(capacity_table(found.items))
        console.print(f"{found.count} matching, index as of {found.as_of.isoformat()}")

    return _guarded(show)


def run_events(
    settings: Settings,
    *,
    api_url: str | None,
    token: str | None,
    agent_id: uuid.UUID | None = None,
    since: datetime | None = None,
    follow: bool = False,
    as_json: bool = False,
    out: TextIO | None = None,
) -> int:
    """Status transitions since ``since`` (None: all kept), then, with ``follow``, each
    new one as the API decides it (the stream resumes by itself after a drop)."""
    stream = out or sys.stdout

    def emit(event: Event) -> None:
        text = msgspec.json.encode(event).decode() if as_json else event_line(event)
        stream.write(text + "\n")
        stream.flush()

    def show() -> None:
        last = 0
        with _api(settings, api_url, token) as api:
            while True:
                page = api.events(
                    agent_id=agent_id, since=since, after_id=last or None, limit=EVENTS_PAGE
                )
                for event in page.items:
                    emit(event)
                    last = event.id
                if page.count < EVENTS_PAGE:
                    break
            if follow:
                # after the last one listed; none listed: from now on (not the whole past)
                for event in api.stream_events(agent_id=agent_id, last_event_id=last or None):
                    emit(event)

    return _guarded(show)
