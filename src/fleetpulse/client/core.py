"""What the sync and async clients share: each API method bound once from its builder in
:mod:`calls`, and the decisions of a call's tries and of the event stream, free of I/O.
``Client`` and ``AsyncClient`` only move bytes (and sleep) between these decisions."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, Literal, ParamSpec, Protocol, TypeVar, overload

import httpx

from fleetpulse.client import calls
from fleetpulse.client.calls import EVENTS_STREAM, RETRY_STATUSES, Call, SseParser
from fleetpulse.client.models import Event
from fleetpulse.client.options import DEFAULT_URL, Options, log

__all__ = ["Again", "Endpoint", "Endpoints", "EventStream", "Tries"]

P = ParamSpec("P")
T = TypeVar("T")
TransportT = TypeVar("TransportT")
HttpT = TypeVar("HttpT")


class _Sync(Protocol):
    @property
    def is_async(self) -> Literal[False]: ...
    def send(self, call: Call[Any], /) -> Any: ...


class _Async(Protocol):
    @property
    def is_async(self) -> Literal[True]: ...
    def send(self, call: Call[Any], /) -> Any: ...


class Endpoint(Generic[P, T]):
    """One API method, written once as its builder in :mod:`calls` and bound here: read
    from a ``Client`` it sends and returns the answer, from an ``AsyncClient`` it is a
    coroutine function, from either class it is the builder (parameters, docstring)."""

    def __init__(self, build: Callable[P, Call[T]]) -> None:
        self.build = build
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, client: None, owner: type) -> Callable[P, Call[T]]: ...
    @overload
    def __get__(self, client: _Sync, owner: type) -> Callable[P, T]: ...
    @overload
    def __get__(self, client: _Async, owner: type) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, client: _Sync | _Async | None, owner: type) -> Callable[P, Any]:
        if client is None:
            return self.build
        build, send = self.build, client.send
        if client.is_async:

            @functools.wraps(build)
            async def coroutine(*args: P.args, **kwargs: P.kwargs) -> T:
                result: T = await send(build(*args, **kwargs))
                return result

            return coroutine

        @functools.wraps(build)
        def method(*args: P.args, **kwargs: P.kwargs) -> T:
            result: T = send(build(*args, **kwargs))
            return result

        return method


class Endpoints(Generic[TransportT, HttpT]):
    """Every call of the API that is one request and one answer, and the constructor: both
    clients inherit these; what streams or pages is written in each client."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
        retries: int = 2,
        retry_backoff_s: float = 0.25,
        retry_max_s: float = 5.0,
        stream_idle_timeout_s: float = 60.0,
        transport: TransportT | None = None,
    ) -> None:
        self.options = Options(
            base_url.rstrip("/"),
            token,
            timeout_s,
            retries,
            retry_backoff_s,
            retry_max_s,
            stream_idle_timeout_s,
        )
        self._http = self._open(transport)

    def _open(self, transport: TransportT | None) -> HttpT:
        raise NotImplementedError

    health = Endpoint(calls.health)
    ready = Endpoint(calls.ready)
    agents = Endpoint(calls.agents)
    agent = Endpoint(calls.agent)
    agent_capacity = Endpoint(calls.agent_capacity)
    capacity = Endpoint(calls.capacity)
    history = Endpoint(calls.history)
    events = Endpoint(calls.events)
    claim = Endpoint(calls.claim)
    claims = Endpoint(calls.claims)
    get_claim = Endpoint(calls.get_claim)
    renew = Endpoint(calls.renew)
    release = Endpoint(calls.release)
    cordon = Endpoint(calls.cordon)
    uncordon = Endpoint(calls.uncordon)
    cordons = Endpoint(calls.cordons)


@dataclass(frozen=True, slots=True)
class Again:
    """Try once more after ``delay_s``."""

    delay_s: float


class Tries(Generic[T]):
    """One call's tries. Idempotent calls are tried again, ``options.retries`` times, after
    a connection error or a 502/503/504, with the house backoff; others never are."""

    def __init__(self, call: Call[T], options: Options) -> None:
        self.call = call
        self.options = options
        self.backoff = options.backoff()

    def request(self) -> dict[str, Any]:
        call = self.call
        return {
            "method": call.method,
            "url": call.path,
            "params": call.params,
            "content": call.body,
            "headers": calls.JSON_BODY if call.body is not None else None,
        }

    def _again(self) -> Again | None:
        if self.call.idempotent and self.backoff.attempts < self.options.retries:
            return Again(self.backoff.next_delay())
        return None

    def failed(self, exc: httpx.TransportError) -> Again:
        """After a connection error: when to try again; raises when not to."""
        again = self._again()
        if again is None:
            raise self.options.unreachable(exc) from exc
        return again

    def answered(self, response: httpx.Response) -> T | Again:
        """The decoded answer, or when to try again; raises the error answer."""
        if response.is_success:
            return calls.decoded(self.call, response.content, str(response.url))
        again = self._again() if response.status_code in RETRY_STATUSES else None
        if again is None:
            raise calls.error_of(response.status_code, response.content, str(response.url))
        return again


class EventStream:
    """The decisions of ``stream_events``: what to ask on each (re)connect, events out of
    the lines, and whether a refusal or a drop ends the stream or waits to reconnect."""

    def __init__(
        self, options: Options, agent_id: object | None, last_event_id: int | None
    ) -> None:
        self.options = options
        self.params = calls.stream_params(agent_id)  # type: ignore[arg-type]
        self.last = None if last_event_id is None else str(last_event_id)
        self.backoff = options.backoff()
        self.connected = False
        self.parser = SseParser()

    def request(self) -> dict[str, Any]:
        headers = {"Accept": "text/event-stream"}
        if self.last is not None:
            headers["Last-Event-ID"] = self.last
        return {
            "method": "GET",
            "url": EVENTS_STREAM,
            "params": self.params,
            "headers": headers,
            "timeout": self.options.stream_timeout(),
        }

    def opened(self) -> None:
        self.connected = True
        self.backoff.reset()
        self.parser = SseParser()

    def line(self, line: str) -> Event | None:
        message = self.parser.feed(line)
        if message is None or message.event not in calls.EVENT_KINDS:
            return None
        event = calls.event_of(message.data)
        self.last = message.id or str(event.id)
        return event

    def refused(self, response: httpx.Response) -> float:
        """An error answer (its body read): raises, unless the stream ran before and the
        API is only restarting (502/503/504); then the delay before reconnecting."""
        error = calls.error_of(response.status_code, response.content, str(response.url))
        if response.status_code not in RETRY_STATUSES or not self.connected:
            raise error
        log.warning("event stream: %s; reconnecting", error)
        return self.backoff.next_delay()

    def dropped(self, exc: httpx.TransportError) -> float:
        """A connection that failed or broke: raises if the stream never opened."""
        if not self.connected:
            raise self.options.unreachable(exc) from exc
        log.warning(
            "event stream from %s dropped (%s); reconnecting",
            self.options.base_url,
            type(exc).__name__,
        )
        return self.backoff.next_delay()

    def ended(self) -> float:
        """The API closed the stream (shutting down, or this reader fell behind)."""
        return self.backoff.next_delay()
