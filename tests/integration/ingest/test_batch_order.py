"""Batches in flight at once write one agent's messages in delivery order."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import psycopg

from fleetpulse.ingest import Delivery, IngestMetrics
from fleetpulse.ingest.batch import BatchProcessor, Session, Turn
from fleetpulse.messages import Message, encode, routing_key
from fleetpulse.store import Database
from tests.fixtures.ingest import T0, goodbye, heartbeat, query, settings_for


class HeldFirst(Database):
    """A pool whose first connection is handed out only once ``release`` is set."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.asked = 0
        self.release = asyncio.Event()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        self.asked += 1
        if self.asked == 1:
            await self.release.wait()
        async with super().connection() as conn:
            yield conn


class Channel:
    is_closed = False

    def __init__(self) -> None:
        self.acked: list[int] = []

    async def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.acked.append(tag)


def delivery(tag: int, message: Message) -> list[Delivery]:
    return [Delivery(tag, encode(message), None, T0, routing_key(None, message.agent_id))]


async def test_a_goodbye_waits_for_the_heartbeat_batch_ahead_of_it(
    db_url: str, amqp_url: str
) -> None:
    """The heartbeat's batch is slow to get a connection; the goodbye's batch behind it
    does not lock (and so does not find the agent absent, or online before its earlier
    heartbeat) until the heartbeat's batch has locked its agents."""
    agent = uuid.uuid4()
    settings = settings_for(db_url, amqp_url)
    channel = Channel()
    session = cast(Session, Session(cast(Any, None), cast(Any, channel), cast(Any, None), 1))
    async with HeldFirst(settings.database) as db:
        batches = BatchProcessor(
            db, settings.ingest, IngestMetrics(), sleep=asyncio.sleep, on_commit=lambda: None
        )
        ahead, behind = Turn.new(), Turn.new()
        hello = asyncio.create_task(
            batches.process(delivery(1, heartbeat(agent, 1)), session, None, ahead)
        )
        bye = asyncio.create_task(
            batches.process(delivery(2, goodbye(agent, 2)), session, ahead, behind)
        )
        for _ in range(20):  # no I/O stands before asking for a connection
            await asyncio.sleep(0)
        assert db.asked == 1
        assert not bye.done()
        db.release.set()
        await asyncio.wait_for(asyncio.gather(hello, bye), 10)
    assert channel.acked == [1, 2]
    assert query(db_url, "SELECT status FROM agent_registry") == [("offline",)]
    assert query(db_url, "SELECT reason FROM agent_status_events ORDER BY id") == [
        ("first_heartbeat",),
        ("shutdown",),
    ]
