"""``Client``: the HTTP API from ordinary (blocking) Python."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from types import TracebackType
from typing import Literal, Self, TypeVar

import httpx

from fleetpulse.client.calls import Call
from fleetpulse.client.core import Again, Endpoints, EventStream, Tries
from fleetpulse.client.models import Agent, Event

__all__ = ["Client"]

T = TypeVar("T")


class Client(Endpoints[httpx.BaseTransport, httpx.Client]):
    """The fleetpulse HTTP API, typed. Use it as a context manager (or call ``close()``).

    >>> with Client("http://127.0.0.1:8000", token=None) as api:
    ...     found = api.capacity(min_gpu_vram_gb=8, limit=1)
    ...     found.items[0].hostname, found.items[0].matching_gpus
    ('agent1', (0,))

    Every method of :class:`~fleetpulse.client.core.Endpoints` (``agents``, ``agent``,
    ``capacity``, ``history``, ``events``, ``claim``, ``cordon``...) takes the parameters of
    its builder in :mod:`fleetpulse.client.calls` and returns the decoded answer.
    Idempotent calls are retried ``retries`` times on connection errors and on
    502/503/504, with jittered exponential backoff; others never are. Error answers raise
    :class:`fleetpulse.errors.ApiError` subclasses carrying the server's ``detail``
    (``ApiConflict`` for 409); an API that cannot be reached raises ``ServiceUnavailable``.
    """

    is_async: Literal[False] = False

    def _open(self, transport: httpx.BaseTransport | None) -> httpx.Client:
        return httpx.Client(transport=transport, **self.options.http())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send(self, call: Call[T]) -> T:
        """Send one prepared call (``fleetpulse.client.calls``) with the retry policy."""
        tries = Tries(call, self.options)
        while True:
            try:
                outcome = tries.answered(self._http.request(**tries.request()))
            except httpx.TransportError as exc:
                outcome = tries.failed(exc)
            if not isinstance(outcome, Again):
                return outcome
            time.sleep(outcome.delay_s)

    def iter_agents(
        self, *, status: str | None = None, pool: str | None = None, page_size: int = 1000
    ) -> Iterator[Agent]:
        """Every agent, page by page."""
        after: uuid.UUID | None = None
        while True:
            page = self.agents(status=status, pool=pool, limit=page_size, after=after)
            yield from page.items
            if page.next_after is None:
                return
            after = page.next_after

    def stream_events(
        self, *, agent_id: uuid.UUID | str | None = None, last_event_id: int | None = None
    ) -> Iterator[Event]:
        """Transitions (and claim and cordon changes) as they are decided, for ever. A
        dropped stream is reopened with ``Last-Event-ID`` (the API replays what was missed),
        after a jittered backoff. Starts after ``last_event_id`` if given, else from now. An
        API that cannot be reached on the first try, or an error answer (401, 400...),
        raises."""
        stream = EventStream(self.options, agent_id, last_event_id)
        while True:
            try:
                with self._http.stream(**stream.request()) as response:
                    if not response.is_success:
                        response.read()
                        time.sleep(stream.refused(response))
                        continue
                    stream.opened()
                    for line in response.iter_lines():
                        if (event := stream.line(line)) is not None:
                            yield event
                delay = stream.ended()
            except httpx.TransportError as exc:
                delay = stream.dropped(exc)
            time.sleep(delay)
