"""``Client``: the HTTP API from ordinary (blocking) Python."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Self, TypeVar

import httpx

from fleetpulse.client import calls
from fleetpulse.client.calls import EVENTS_STREAM, RETRY_STATUSES, Call, SseParser
from fleetpulse.client.models import (
    Agent,
    AgentList,
    Capacity,
    CapacityList,
    Claim,
    ClaimFilter,
    ClaimList,
    Cordon,
    CordonList,
    Event,
    EventList,
    Health,
    History,
)
from fleetpulse.client.options import DEFAULT_URL, Options, log

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """The fleetpulse HTTP API, typed. Use it as a context manager (or call ``close()``).

    >>> with Client("http://127.0.0.1:8000", token=None) as api:
    ...     found = api.capacity(min_gpu_vram_gb=8, limit=1)
    ...     found.items[0].hostname, found.items[0].matching_gpus
    ('agent1', (0,))

    Idempotent calls (every GET) are retried ``retries`` times on connection errors and on
    502/503/504, with jittered exponential backoff; other calls never are. Error answers
    raise :class:`fleetpulse.errors.ApiError` subclasses carrying the server's ``detail``
    (``Conflict`` for 409); an API that cannot be reached raises ``ServiceUnavailable``.
    """

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
        transport: httpx.BaseTransport | None = None,
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
        self._http = httpx.Client(
            base_url=self.options.base_url,
            headers=self.options.headers(),
            timeout=self.options.timeout(),
            transport=transport,
        )

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
        backoff = self.options.backoff()
        while True:
            try:
                response = self._http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    content=call.body,
                    headers=calls.JSON_BODY if call.body is not None else None,
                )
            except httpx.TransportError as exc:
                if call.idempotent and backoff.attempts < self.options.retries:
                    time.sleep(backoff.next_delay())
                    continue
                raise self.options.unreachable(exc) from exc
            if response.is_success:
                return calls.decoded(call, response.content, str(response.url))
            if (
                response.status_code in RETRY_STATUSES
                and call.idempotent
                and backoff.attempts < self.options.retries
            ):
                time.sleep(backoff.next_delay())
                continue
            raise calls.error_of(response.status_code, response.content, str(response.url))

    def health(self) -> Health:
        return self.send(calls.health())

    def ready(self) -> Health:
        """``/readyz``; a database that does not answer raises ``ApiUnavailable`` (503)."""
        return self.send(calls.ready())

    def agents(
        self,
        *,
        status: str | None = None,
        pool: str | None = None,
        limit: int = 1000,
        after: uuid.UUID | str | None = None,
    ) -> AgentList:
        """One page of the registry, by agent_id; ``next_after`` asks for the next."""
        return self.send(calls.agents(status=status, pool=pool, limit=limit, after=after))

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

    def agent(self, agent_id: uuid.UUID | str) -> Agent:
        return self.send(calls.agent(agent_id))

    def agent_capacity(self, agent_id: uuid.UUID | str) -> Capacity:
        """Any known agent's latest capacity, online or not."""
        return self.send(calls.agent_capacity(agent_id))

    def capacity(
        self,
        *,
        min_gpu_vram_gb: float | None = None,
        min_cpu_cores: int | None = None,
        min_mem_gb: float | None = None,
        min_gpu_count: int | None = None,
        gpu_type: str | None = None,
        pool: str | None = None,
        max_sample_age_s: float | None = None,
        min_reliability: float | None = None,
        limit: int | None = None,
    ) -> CapacityList:
        """Online agents that can take a job now, most free VRAM first (None: no condition)."""
        return self.send(
            calls.capacity(
                min_gpu_vram_gb=min_gpu_vram_gb,
                min_cpu_cores=min_cpu_cores,
                min_mem_gb=min_mem_gb,
                min_gpu_count=min_gpu_count,
                gpu_type=gpu_type,
                pool=pool,
                max_sample_age_s=max_sample_age_s,
                min_reliability=min_reliability,
                limit=limit,
            )
        )

    def history(
        self,
        agent_id: uuid.UUID | str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        bucket: str | int | None = None,
    ) -> History:
        """avg/min/max per time bucket over [since, until) (default: the last hour)."""
        return self.send(calls.history(agent_id, since=since, until=until, bucket=bucket))

    def events(
        self,
        *,
        agent_id: uuid.UUID | str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_id: int | None = None,
        limit: int | None = None,
    ) -> EventList:
        """Status transitions in the order they were decided; page with ``after_id``."""
        return self.send(
            calls.events(
                agent_id=agent_id, since=since, until=until, after_id=after_id, limit=limit
            )
        )

    def claim(
        self,
        *,
        holder: str,
        ttl_s: float,
        agent_id: uuid.UUID | str | None = None,
        filter: ClaimFilter | None = None,
        gpus: Sequence[int | str] | None = None,
        vram_gb: float | None = None,
        gpu_count: int | None = None,
        cpu_cores: int | None = None,
        mem_gb: float | None = None,
    ) -> Claim:
        """Hold capacity for ``holder`` for ``ttl_s`` seconds: on ``agent_id`` (optionally
        the ``gpus`` named, by index or uuid) or on the best agent matching ``filter``.
        Raises ``ApiConflict`` (409) when nothing fits any more: ask for capacity again.
        Never retried (a retry after a lost answer could hold twice)."""
        return self.send(
            calls.claim(
                holder=holder,
                ttl_s=ttl_s,
                agent_id=agent_id,
                filter=filter,
                gpus=gpus,
                vram_gb=vram_gb,
                gpu_count=gpu_count,
                cpu_cores=cpu_cores,
                mem_gb=mem_gb,
            )
        )

    def claims(
        self,
        *,
        agent_id: uuid.UUID | str | None = None,
        holder: str | None = None,
        limit: int | None = None,
    ) -> ClaimList:
        """Active claims, optionally of one agent or one holder."""
        return self.send(calls.claims(agent_id=agent_id, holder=holder, limit=limit))

    def get_claim(self, claim_id: uuid.UUID | str) -> Claim:
        """An active claim; ``ApiNotFound`` once it has ended (released or expired)."""
        return self.send(calls.get_claim(claim_id))

    def renew(self, claim_id: uuid.UUID | str, ttl_s: float) -> Claim:
        """Keep a claim ``ttl_s`` seconds from now; ``ApiConflict`` if it has ended."""
        return self.send(calls.renew(claim_id, ttl_s))

    def release(self, claim_id: uuid.UUID | str) -> None:
        """Give a claim back (idempotent: releasing an ended claim is fine)."""
        self.send(calls.release(claim_id))

    def cordon(
        self, agent_id: uuid.UUID | str, *, reason: str, by: str, gpu_uuid: str | None = None
    ) -> Cordon:
        """Take an agent, or one of its GPUs, out of the offer."""
        return self.send(calls.cordon(agent_id, reason=reason, by=by, gpu_uuid=gpu_uuid))

    def uncordon(self, agent_id: uuid.UUID | str, *, gpu_uuid: str | None = None) -> None:
        """Put a cordoned agent or GPU back in the offer (idempotent)."""
        self.send(calls.uncordon(agent_id, gpu_uuid=gpu_uuid))

    def cordons(self, *, agent_id: uuid.UUID | str | None = None) -> CordonList:
        return self.send(calls.cordons(agent_id=agent_id))

    def stream_events(
        self, *, agent_id: uuid.UUID | str | None = None, last_event_id: int | None = None
    ) -> Iterator[Event]:
        """Transitions as they are decided, for ever. A dropped stream is reopened with
        ``Last-Event-ID`` (the API replays what was missed), after a jittered backoff.
        Start after ``last_event_id`` if given, else from now. An API that cannot be reached
        on the first try, or an error answer (401, 400...), raises."""
        last = None if last_event_id is None else str(last_event_id)
        params = calls.stream_params(agent_id)
        backoff = self.options.backoff()
        connected = False
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = last
            try:
                with self._http.stream(
                    "GET",
                    EVENTS_STREAM,
                    params=params,
                    headers=headers,
                    timeout=self.options.stream_timeout(),
                ) as response:
                    if not response.is_success:
                        response.read()
                        error = calls.error_of(
                            response.status_code, response.content, str(response.url)
                        )
                        if response.status_code not in RETRY_STATUSES or not connected:
                            raise error
                        log.warning("event stream: %s; reconnecting", error)
                    else:
                        connected = True
                        backoff.reset()
                        parser = SseParser()
                        for line in response.iter_lines():
                            message = parser.feed(line)
                            if message is None or message.event not in calls.EVENT_KINDS:
                                continue
                            event = calls.event_of(message.data)
                            last = message.id or str(event.id)
                            yield event
            except httpx.TransportError as exc:
                if not connected:
                    raise self.options.unreachable(exc) from exc
                log.warning(
                    "event stream from %s dropped (%s); reconnecting",
                    self.options.base_url,
                    type(exc).__name__,
                )
            time.sleep(backoff.next_delay())
