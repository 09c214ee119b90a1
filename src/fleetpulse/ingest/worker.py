"""The stream processor: consume heartbeats in batches, write each batch in one
transaction, ack after commit, dead-letter what cannot be stored.

One AMQP connection (aiormq directly, no aio-pika robust layer: reconnects are ours)
with a consuming channel and a confirming channel for dead letters. Deliveries pile up
in a buffer while the previous batch commits, so batches size themselves to the load.
What happens to each batch (decode, write, settle, account) is :mod:`.batch`'s.

Memory is bounded in bytes as well as messages: the broker refuses a body over its
``max_message_size``, the prefetch count is cut so that that many of the biggest bodies fit
in ``ingest.max_unacked_bytes``, and should a broker allow bigger ones, the consumer is
cancelled past that many bytes held until half of them are settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Self

import aiormq
import aiormq.abc
from aiormq.exceptions import ChannelInvalidStateError
from pamqp.commands import Basic

from fleetpulse.broker import BrokerUrls
from fleetpulse.config import Settings, mask_url
from fleetpulse.errors import ServiceUnavailable, StoreError
from fleetpulse.ingest.batch import BatchProcessor, CommitReport, Session, Turn
from fleetpulse.ingest.deadletter import AMQP_CONNECTION_ERRORS
from fleetpulse.ingest.memory import TRIM_AFTER_BYTES, trim
from fleetpulse.ingest.metrics import IngestMetrics
from fleetpulse.ingest.planner import Delivery
from fleetpulse.ingest.topology import (
    DeadLetterLimits,
    TopologyChannels,
    TopologyReport,
    check_topology,
    declare_topology,
)
from fleetpulse.lifecycle import Backoff
from fleetpulse.messages import BROKER_MAX_MESSAGE_BYTES, INGEST_QUEUE
from fleetpulse.store import Database, report_watermark

__all__ = ["AMQP_CONNECTION_ERRORS", "CommitReport", "Ingest", "utc_now"]

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _reap(tasks: set[asyncio.Task[None]]) -> None:
    """Forget finished tasks, re-raising the first failure (a lost channel, say)."""
    for task in [t for t in tasks if t.done()]:
        tasks.discard(task)
        task.result()


class Ingest:
    """``async with Ingest(settings) as ingest``: consuming until :meth:`stop` or exit.

    States: new → running → stopping → closed. ``clock`` stamps receive times;
    ``sleep`` drives every backoff (tests pass an instant one).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: IngestMetrics | None = None,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], Any] = asyncio.sleep,
        on_commit: Callable[[CommitReport], None] | None = None,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.config = settings.ingest
        self.metrics = metrics or IngestMetrics()
        self.clock = clock
        self.on_commit = on_commit
        self.name = name or f"fleetpulse-ingest-{uuid.uuid4().hex[:8]}"
        self.state: Literal["new", "running", "stopping", "closed"] = "new"
        self.db = Database(settings.database)
        self.brokers = BrokerUrls(settings.amqp.broker_urls())
        self.queue_type: str | None = None
        self.sessions_started = 0
        self.consuming = asyncio.Event()
        self._buffer: list[Delivery] = []
        self._first_at = 0.0
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._stop = asyncio.Event()
        self._generation = 0
        self._session: Session | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._flow_tasks: set[asyncio.Task[None]] = set()
        self.held_bytes_peak = 0  # the most bytes of bodies ever held unsettled at once
        self._trim_due = False
        # What the last topology check could not repair, or repaired (one check long).
        self.topology_problems: list[str] = []
        self._topology: TopologyChannels | None = None
        # Receive time of the first delivery of each batch being written (the watermark can
        # not pass them), and this worker's watermark as last reported.
        self._writing: dict[int, datetime] = {}
        self.seen_through: datetime | None = None
        self._ready = -1  # messages ready in the queue at the last look (-1: unknown)
        self._in_step = False
        self._empty_looks = 0
        self.unsettled = 0  # deliveries received and not yet settled (acked or abandoned)
        self._broker_unreachable = False  # the last session was lost or could not be had
        self._step_mark: datetime | None = None
        self._batches = BatchProcessor(
            self.db, self.config, self.metrics, sleep=sleep, on_commit=lambda: self.on_commit
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self.config.write_method != "copy":
            log.warning(
                "ingest.write_method = %r is deprecated and ignored: batches are written"
                " with binary COPY",
                self.config.write_method,
            )
        backoff = self._backoff()
        while not self._stop.is_set():
            try:
                await self.db.open()
                break
            except ServiceUnavailable as exc:
                log.warning("ingest waits for the database: %s", exc)
                await backoff.wait(self._stop)
        else:
            return  # asked to stop before the database ever answered
        self.state = "running"
        self._tasks.append(asyncio.create_task(self._consume_forever(), name="ingest-consume"))
        self._tasks.append(asyncio.create_task(self._watch_queue_depth(), name="ingest-depth"))

    def request_stop(self) -> None:
        """Ask a starting or running ingest to stop (safe from a signal handler)."""
        self._stop.set()
        self._wakeup.set()
        self._full.set()

    async def stop(self, timeout_s: float | None = None) -> None:
        """Stop intake, commit and ack what is buffered (up to ``timeout_s``), then close."""
        if self.state in {"stopping", "closed"}:
            return
        self.state = "stopping"
        limit = self.config.drain_timeout_s if timeout_s is None else timeout_s
        self._batches.deadline = time.monotonic() + limit
        self._stop.set()
        self._wakeup.set()
        self._full.set()
        consume, others = (self._tasks[0], self._tasks[1:]) if self._tasks else (None, [])
        for task in others:
            task.cancel()
        if consume is not None:
            try:
                await asyncio.wait_for(consume, timeout=limit + 1.0)
            except (TimeoutError, asyncio.CancelledError):
                log.warning(
                    "ingest drain exceeded %.1fs; unacked messages will be redelivered", limit
                )
        # A consumer change in flight finishes (cancelling an RPC midway closes the channel).
        await asyncio.gather(*others, *self._flow_tasks, return_exceptions=True)
        await self.db.close()
        self.state = "closed"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _backoff(self) -> Backoff:
        return self._batches.backoff()

    # ------------------------------------------------------------------ the broker side

    async def _consume_forever(self) -> None:
        backoff = self._backoff()
        while not self._stop.is_set():
            try:
                await self._run_session(backoff)
            except AMQP_CONNECTION_ERRORS as exc:
                self.consuming.clear()
                self._broker_unreachable = True
                self._forget_session()
                if self._stop.is_set():
                    break
                log.warning(
                    "broker connection to %s lost (%s: %s); reconnecting%s",
                    mask_url(self.brokers.current),
                    type(exc).__name__,
                    exc,
                    f" to {mask_url(self.brokers.advance())}" if len(self.brokers) > 1 else "",
                )
                await backoff.wait(self._stop)
        self.consuming.clear()

    def _forget_session(self) -> None:
        if self._session is not None:
            self._session.lost = True
        self._session = None
        # Unacked deliveries of a dead channel come back from the broker; drop our copies.
        self.unsettled -= len(self._buffer)
        self._buffer.clear()
        self._wakeup.clear()
        self._full.clear()

    async def _run_session(self, backoff: Backoff) -> None:
        connection = await aiormq.connect(
            self.brokers.current, client_properties={"connection_name": self.name}
        )
        try:
            report = TopologyReport()
            self.queue_type = await declare_topology(connection, self._dead_letter_limits(), report)
            self._note_topology(report)
            channel = await connection.channel(publisher_confirms=False)
            dead_letters = await connection.channel(publisher_confirms=True)
            await channel.basic_qos(prefetch_count=self.prefetch_count)
            self._generation += 1
            session = Session(connection, channel, dead_letters, self._generation)
            self._ready = -1  # a backlog may have built up meanwhile: look before vouching
            self._session = session
            await self._consume(session)
            self.sessions_started += 1
            self._broker_unreachable = False
            self.consuming.set()
            backoff.reset()
            log.info(
                "ingest %s consuming %s (%s queue) at %s",
                self.name,
                INGEST_QUEUE,
                self.queue_type,
                mask_url(self.brokers.current),
            )
            await self._batch_loop(session)
        finally:
            with contextlib.suppress(*AMQP_CONNECTION_ERRORS, RuntimeError):
                await connection.close()

    @property
    def prefetch_count(self) -> int:
        """Unacked messages at most: ``prefetch``, and no more than ``max_unacked_bytes`` of
        bodies as big as the broker allows (prefetch counts messages, never bytes)."""
        by_bytes = self.config.max_unacked_bytes // BROKER_MAX_MESSAGE_BYTES
        return max(1, min(self.config.prefetch, by_bytes))

    def _dead_letter_limits(self) -> DeadLetterLimits:
        return DeadLetterLimits(
            self.config.dead_letter_max_messages, self.config.dead_letter_max_bytes
        )

    async def _consume(self, session: Session) -> None:
        consume_ok = await session.channel.basic_consume(
            INGEST_QUEUE, self._on_message_for(session), no_ack=False
        )
        session.consumer_tag = consume_ok.consumer_tag or ""

    def _flow(self, session: Session, pause: bool) -> None:
        """Cancel the consumer (``pause``) or consume again, in order, off the callback."""
        session.paused = pause
        if pause:
            self.metrics.consumer_pauses.inc()
            log.warning(
                "ingest holds %d unsettled bytes (limit %d); pausing consumption",
                session.held_bytes,
                self.config.max_unacked_bytes,
            )

        async def change() -> None:
            async with session.flow:
                if session.lost or session.channel.is_closed or pause != session.paused:
                    return
                with contextlib.suppress(*AMQP_CONNECTION_ERRORS, ChannelInvalidStateError):
                    if pause:
                        await session.channel.basic_cancel(session.consumer_tag)
                    elif not self._stop.is_set():
                        await self._consume(session)

        task = asyncio.create_task(change(), name="ingest-flow")
        self._flow_tasks.add(task)
        task.add_done_callback(self._flow_tasks.discard)

    def _release(self, session: Session, batch: Sequence[Delivery]) -> None:
        self.unsettled -= len(batch)
        session.held_bytes -= sum(len(d.body) for d in batch)
        if session is self._session:
            self.metrics.unacked_bytes.set(session.held_bytes)
        if session.held_bytes <= 0 and self._trim_due:
            # After a burst of big bodies: give the freed memory back to the system.
            self._trim_due = False
            trim()
        if session.paused and session.held_bytes <= self.config.max_unacked_bytes // 2:
            self._flow(session, pause=False)

    def _process(
        self,
        batch: list[Delivery],
        session: Session,
        previous: Turn | None,
        turn: Turn,
    ) -> Coroutine[Any, Any, None]:
        """The coroutine writing ``batch``, which counts as being written from now on."""
        key = id(batch)
        self._writing[key] = batch[0].received_at

        async def process() -> None:
            try:
                await self._batches.process(batch, session, previous, turn)
            finally:
                self._writing.pop(key, None)
                self._release(session, batch)

        return process()

    def _on_message_for(self, session: Session) -> Callable[[aiormq.abc.DeliveredMessage], Any]:
        buffer = self._buffer
        clock = self.clock
        generation = session.generation
        batch_max = self.config.batch_max_messages
        wakeup = self._wakeup
        full = self._full
        max_bytes = self.config.max_unacked_bytes
        unacked_bytes = self.metrics.unacked_bytes

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            if session.lost:
                return
            properties = message.header.properties
            delivery = message.delivery
            assert isinstance(delivery, Basic.Deliver)
            self.unsettled += 1
            session.held_bytes += len(message.body)
            unacked_bytes.set(session.held_bytes)
            if session.held_bytes > self.held_bytes_peak:
                self.held_bytes_peak = session.held_bytes
            if session.held_bytes > TRIM_AFTER_BYTES:
                self._trim_due = True
            if session.held_bytes > max_bytes and not session.paused:
                self._flow(session, pause=True)
            buffer.append(
                Delivery(
                    delivery.delivery_tag or 0,
                    message.body,
                    properties.user_id,
                    clock(),
                    delivery.routing_key or "",
                    properties.headers,
                    generation,
                    properties.content_type,
                    properties.content_encoding,
                )
            )
            size = len(buffer)
            if size == 1:
                self._first_at = time.monotonic()
                wakeup.set()
            if size >= batch_max:
                full.set()

        return on_message

    async def _wait_for(self, event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    async def _batch_loop(self, session: Session) -> None:
        """Form batches and write up to ``commit_pipeline`` of them at once.

        Writes overlap (the database works on one while Python prepares the next), but
        each batch takes its turn (:class:`~fleetpulse.ingest.batch.Turn`): it locks its
        agents only after the one before it has locked theirs, so an agent's messages are
        written in delivery order, and acks only after that one has acked.
        """
        age_s = self.config.batch_max_age_s
        batch_max = self.config.batch_max_messages
        depth = self.config.commit_pipeline
        connection = session.connection
        inflight: set[asyncio.Task[None]] = set()
        previous: Turn | None = None
        try:
            while True:
                if connection.is_closed:
                    raise ConnectionError("broker connection closed")
                _reap(inflight)
                if self._stop.is_set():
                    await asyncio.gather(*inflight)
                    await self._drain(session, previous)
                    return
                if not self._buffer:
                    self._wakeup.clear()
                    await self._wait_for(self._wakeup, 0.25)
                    continue
                if len(self._buffer) < batch_max:
                    remaining = age_s - (time.monotonic() - self._first_at)
                    if remaining > 0:
                        self._full.clear()
                        await self._wait_for(self._full, remaining)
                        continue
                if len(inflight) >= depth:
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                batch = self._buffer[:batch_max]
                del self._buffer[:batch_max]
                turn = Turn.new()
                inflight.add(asyncio.create_task(self._process(batch, session, previous, turn)))
                previous = turn
                # What is left waited through earlier commits: due as soon as a slot frees.
                self._first_at = time.monotonic() - age_s
        finally:
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)

    async def _drain(self, session: Session, previous: Turn | None) -> None:
        if session.consumer_tag:
            async with session.flow:  # not while a pause or a resume is under way
                with contextlib.suppress(*AMQP_CONNECTION_ERRORS, ChannelInvalidStateError):
                    await session.channel.basic_cancel(session.consumer_tag)
        batch_max = self.config.batch_max_messages
        while self._buffer:
            batch = self._buffer[:batch_max]
            del self._buffer[:batch_max]
            turn = Turn.new()
            await self._process(batch, session, previous, turn)
            previous = turn

    # ------------------------------------------------------------------ queue depth, topology

    def _note_topology(self, report: TopologyReport) -> None:
        for problem in report.repaired:
            self.metrics.topology_repairs.labels(problem).inc()
        self.topology_problems = [*report.problems, *(f"repaired {p}" for p in report.repaired)]
        self.metrics.topology_ok.set(0 if report.problems else 1)

    async def check_topology(self) -> TopologyReport | None:
        """Check (and repair) the topology now; None without a broker session."""
        session = self._session
        if session is None or session.connection.is_closed:
            return None
        if self._topology is None or self._topology.connection is not session.connection:
            self._topology = TopologyChannels(session.connection)
        report = await check_topology(self._topology)
        self._note_topology(report)
        return report

    def readiness(self) -> list[str]:
        """Why ingest is not ready (empty: ready): not consuming, or a topology fault."""
        problems: list[str] = []
        if self.state != "running":
            problems.append(f"ingest is {self.state}")
        elif not self.consuming.is_set():
            problems.append("not consuming (no broker connection)")
        problems.extend(f"broker topology: {p}" for p in self.topology_problems)
        return problems

    def watermark(self) -> datetime | None:
        """A receive time before which every heartbeat the broker held is committed, as far
        as this worker can vouch; None when it can vouch for nothing new.

        In step (the queue empty at the last look, and nothing received before it was found
        empty twice in a row left unwritten), that is the present, or the first receive time
        still being written. Out of step (a backlog in the queue, a new broker session, a
        backlog received and not yet written) it vouches for nothing: the receive times of a
        backlog are those of its delivery, not of its publication. With the broker
        unreachable, the present: agents cannot publish either.
        """
        now = self.clock()
        if self._session is None or not self.consuming.is_set():
            self._in_step, self._step_mark, self._empty_looks = False, None, 0
            return now if self._broker_unreachable else None
        if self._ready != 0:
            self._in_step, self._step_mark, self._empty_looks = False, None, 0
            return None
        pending = list(self._writing.values())
        if self._buffer:
            pending.append(self._buffer[0].received_at)
        oldest = min(pending, default=None)
        if not self._in_step:
            # The queue was empty at two looks in a row: what the broker handed over before
            # the second (on the wire at the first included) is the backlog, in step once
            # it is all written.
            self._empty_looks += 1
            if self._empty_looks == 2:
                self._step_mark = now
            if self._step_mark is None or (oldest is not None and oldest <= self._step_mark):
                return None
            self._in_step = True
        return now if oldest is None else min(now, oldest)

    async def _report_watermark(self) -> None:
        seen = self.watermark()
        if seen is not None and (self.seen_through is None or seen > self.seen_through):
            self.seen_through = seen
        if self.seen_through is None:
            return  # nothing to vouch for yet: the detector holds until this worker can
        self.metrics.seen_through.set(self.seen_through.timestamp())
        try:
            async with self.db.connection() as conn:
                await report_watermark(conn, self.name, self.seen_through, self.clock())
        except (ServiceUnavailable, StoreError) as exc:
            log.debug("watermark not reported: %s", exc)

    async def _watch_queue_depth(self) -> None:
        while True:
            session = self._session
            if session is not None and not session.dead_letters.is_closed:
                try:
                    declared = await session.dead_letters.queue_declare(INGEST_QUEUE, passive=True)
                    self._ready = declared.message_count or 0
                    self.metrics.queue_depth.set(self._ready)
                    await self.check_topology()
                except AMQP_CONNECTION_ERRORS as exc:
                    self._ready = -1
                    log.debug("queue depth unavailable: %s", exc)
            await self._report_watermark()
            await asyncio.sleep(self.config.queue_depth_interval_s)
