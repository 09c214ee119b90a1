"""``AsyncClient``: the HTTP API from asyncio code; the same calls as ``Client``, awaited."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Literal, Self, TypeVar

import httpx

from fleetpulse.client.calls import Call
from fleetpulse.client.core import Again, Endpoints, EventStream, Tries
from fleetpulse.client.models import Agent, Event

__all__ = ["AsyncClient"]

T = TypeVar("T")


class AsyncClient(Endpoints[httpx.AsyncBaseTransport, httpx.AsyncClient]):
    """``Client`` for asyncio: every method is awaited, streams are async iterators.

    >>> async with AsyncClient("http://127.0.0.1:8000") as api:
    ...     agent = await api.agent("0b9d4ad4-0a8e-4b43-9b7a-8d0f1f5c1a2e")
    ...     agent.status, agent.gpu_vram_available_gb
    ('online', 8.0)
    """

    is_async: Literal[True] = True

    def _open(self, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=transport, **self.options.http())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def send(self, call: Call[T]) -> T:
        """Send one prepared call (``fleetpulse.client.calls``) with the retry policy."""
        tries = Tries(call, self.options)
        while True:
            try:
                outcome = tries.answered(await self._http.request(**tries.request()))
            except httpx.TransportError as exc:
                outcome = tries.failed(exc)
            if not isinstance(outcome, Again):
                return outcome
            await asyncio.sleep(outcome.delay_s)

    async def iter_agents(
        self, *, status: str | None = None, pool: str | None = None, page_size: int = 1000
    ) -> AsyncIterator[Agent]:
        """Every agent, page by page."""
        after: uuid.UUID | None = None
        while True:
            page = await self.agents(status=status, pool=pool, limit=page_size, after=after)
            for agent in page.items:
                yield agent
            if page.next_after is None:
                return
            after = page.next_after

    async def stream_events(
        self, *, agent_id: uuid.UUID | str | None = None, last_event_id: int | None = None
    ) -> AsyncIterator[Event]:
        """As ``Client.stream_events``: reopens a dropped stream with ``Last-Event-ID``."""
        stream = EventStream(self.options, agent_id, last_event_id)
        while True:
            try:
                async with self._http.stream(**stream.request()) as response:
                    if not response.is_success:
                        await response.aread()
                        await asyncio.sleep(stream.refused(response))
                        continue
                    stream.opened()
                    async for line in response.aiter_lines():
                        if (event := stream.line(line)) is not None:
                            yield event
                delay = stream.ended()
            except httpx.TransportError as exc:
                delay = stream.dropped(exc)
            await asyncio.sleep(delay)
