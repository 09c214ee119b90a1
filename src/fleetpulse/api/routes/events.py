"""``/api/v1/events``: status transitions, listed or streamed (Server-Sent Events)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Final

import msgspec
from litestar import Controller, get
from litestar.datastructures import State
from litestar.params import HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from fleetpulse.api.errors import error_responses
from fleetpulse.api.routes.agents import MAX_LIMIT, check_time
from fleetpulse.api.schemas import EventList, event_of
from fleetpulse.api.services import Services, services_of
from fleetpulse.store import StatusEvent, fetch_events

__all__ = ["EventRoutes"]

_encoder: Final = msgspec.json.Encoder()
REPLAY_PAGE: Final = 1000
RETRY_MS: Final = 1000

AgentFilter = Annotated[uuid.UUID | None, QueryParameter(description="Only this agent's events.")]


def _kind(reason: str) -> str:
    """The SSE event name: ``status`` for transitions (as always), ``claim`` and ``cordon``
    for those changes, ``offer`` for an owner withholding or offering the machine,
    ``gpu_health`` for a change of GPU health (a client listening for ``status`` alone sees
    nothing new)."""
    if reason.startswith("claim_"):
        return "claim"
    if reason in ("cordon", "uncordon"):
        return "cordon"
    if reason in ("withheld", "offered"):
        return "offer"
    if reason == "gpu_health":
        return "gpu_health"
    return "status"


def _message(event: StatusEvent) -> ServerSentEventMessage:
    return ServerSentEventMessage(
        data=_encoder.encode(event_of(event)).decode(), event=_kind(event.reason), id=event.id
    )


async def _stream(
    services: Services, agent_id: uuid.UUID | None, last_id: int | None
) -> AsyncIterator[ServerSentEventMessage]:
    feed = services.feed
    sub = feed.subscribe()  # before the replay, so nothing falls between the two
    sent = feed.last_id if last_id is None else last_id
    keepalive = services.settings.api.sse_keepalive_s
    try:
        yield ServerSentEventMessage(data=None, comment="fleetpulse status events", retry=RETRY_MS)
        if last_id is not None:
            while True:
                async with services.db.connection() as conn:
                    page = await fetch_events(
                        conn, agent_id=agent_id, after_id=sent, limit=REPLAY_PAGE
                    )
                for event in page:
                    yield _message(event)
                    sent = event.id
                if len(page) < REPLAY_PAGE:
                    break
        while True:
            batch = await sub.next_batch(keepalive)
            if batch is None:
                return  # shutting down or too far behind: the client resumes by Last-Event-ID
            if not batch:
                yield ServerSentEventMessage(data=None, comment="keepalive")
                continue
            for event in batch:
                if event.id <= sent or (agent_id is not None and event.agent_id != agent_id):
                    continue
                yield _message(event)
                sent = event.id
    finally:
        feed.unsubscribe(sub)


class EventRoutes(Controller):
    path = "/api/v1/events"
    tags = ["events"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @get(
        "/",
        summary="Status transitions",
        description="In the order they were decided (id); page with `after_id` = the last id.",
        responses=error_responses(400, 401, 503),
    )
    async def list_events(
        self,
        state: State,
        agent_id: AgentFilter = None,
        since: Annotated[
            datetime | None, QueryParameter(description="At or after this time; naive = UTC.")
        ] = None,
        until: Annotated[datetime | None, QueryParameter(description="Before this time.")] = None,
        after_id: Annotated[
            int, QueryParameter(ge=0, le=2**62, description="Only events after this id.")
        ] = 0,
        limit: Annotated[
            int, QueryParameter(ge=1, le=MAX_LIMIT, description="At most this many.")
        ] = 100,
    ) -> EventList:
        start, stop = check_time(since), check_time(until)
        async with services_of(state).db.connection() as conn:
            events = await fetch_events(
                conn,
                agent_id=agent_id,
                since=start,
                until=stop,
                after_id=after_id or None,
                limit=limit,
            )
        items = [event_of(e) for e in events]
        return EventList(items=items, count=len(items), as_of=datetime.now(UTC))

    @get(
        "/stream",
        summary="Status transitions as Server-Sent Events",
        description=(
            "Each event: `id` = event id, `event: status` (or `claim`, `cordon` for those"
            " changes, `offer` for withheld/offered, `gpu_health` for a change of GPU health),"
            " `data` = an Event as JSON; pushed"
            " from the database (LISTEN/NOTIFY) as the detector decides. Reconnect with"
            " `Last-Event-ID` to receive what was missed. Comments keep idle streams open."
        ),
        responses=error_responses(400, 401),
    )
    async def stream_events(
        self,
        state: State,
        agent_id: AgentFilter = None,
        last_event_id: Annotated[
            int | None,
            HeaderParameter(
                name="Last-Event-ID",
                ge=0,
                le=2**62,
                required=False,
                description="Resume after this event id.",
            ),
        ] = None,
    ) -> ServerSentEvent:
        return ServerSentEvent(_stream(services_of(state), agent_id, last_event_id))
