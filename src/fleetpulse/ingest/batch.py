"""One batch of deliveries, start to end: decode, write with retry, settle, account.

The worker (:mod:`fleetpulse.ingest.worker`) forms batches from its buffer and hands each
to :meth:`BatchProcessor.process` with the broker session it came in on. A batch is written
in one transaction (its agents locked, planned against, written), acked after commit in one
frame, and what cannot be stored is dead-lettered with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiormq.abc

from fleetpulse.config import IngestSettings
from fleetpulse.errors import PoisonRowError, ServiceUnavailable, StoreError
from fleetpulse.ingest.deadletter import AMQP_CONNECTION_ERRORS, dead_letter, log_rejection
from fleetpulse.ingest.metrics import IngestMetrics
from fleetpulse.ingest.planner import (
    ClockBounds,
    Decoded,
    Delivery,
    Plan,
    Rejection,
    clock_offset_s,
    decode_batch,
    plan_batch,
)
from fleetpulse.lifecycle import Backoff
from fleetpulse.messages import Heartbeat
from fleetpulse.store import REPLAN_ATTEMPTS, Database, WriteResult, locked_batch

__all__ = ["Abandoned", "BatchProcessor", "CommitReport", "Session", "Turn"]

log = logging.getLogger(__name__)
security_log = logging.getLogger("fleetpulse.security")


@dataclass(slots=True)
class Session:
    """One broker connection of the worker: where its batches came from and settle."""

    connection: aiormq.abc.AbstractConnection
    channel: aiormq.abc.AbstractChannel
    dead_letters: aiormq.abc.AbstractChannel
    generation: int
    consumer_tag: str = ""
    lost: bool = False
    held_bytes: int = 0  # bodies received and not yet settled
    paused: bool = False  # consumer cancelled while held_bytes was over the limit
    flow: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(slots=True)
class CommitReport:
    """What one batch did, handed to ``on_commit`` observers (tests, benchmarks)."""

    heartbeats: list[Heartbeat]
    stored: int
    duplicate: int
    rejected: list[Rejection]
    committed_at: float  # time.time() after commit and ack
    events: int = 0
    messages: int = 0  # every delivery the batch settled, heartbeats or not


@dataclass(slots=True, frozen=True)
class Turn:
    """A batch's place in its worker's order, as the batch after it waits on it.

    The next batch locks its agents only once this one has locked theirs (``locked``), so
    one agent's messages are written in delivery order even with several batches in
    flight (a goodbye is not written before the heartbeat delivered ahead of it); and it
    acks only once this one has acked (``settled``: whether it did), since a multiple-ack
    covers every earlier delivery tag.
    """

    locked: asyncio.Future[None]
    settled: asyncio.Future[bool]

    @classmethod
    def new(cls) -> Turn:
        loop = asyncio.get_running_loop()
        return cls(loop.create_future(), loop.create_future())


class Abandoned(Exception):
    """The batch cannot be acked any more (connection gone, or shutdown past its deadline)."""


@dataclass(slots=True)
class _Outcome:
    plans: list[Plan] = field(default_factory=list)
    results: list[WriteResult] = field(default_factory=list)
    poisoned: list[Rejection] = field(default_factory=list)


class BatchProcessor:
    """Processes the batches of one worker; ``deadline`` (monotonic) set once it drains."""

    def __init__(
        self,
        db: Database,
        config: IngestSettings,
        metrics: IngestMetrics,
        *,
        sleep: Callable[[float], Any],
        on_commit: Callable[[], Callable[[CommitReport], None] | None],
    ) -> None:
        self.db = db
        self.config = config
        self.metrics = metrics
        self.deadline: float | None = None
        self.clock_bounds = ClockBounds(
            config.sample_max_behind_s, config.sample_max_ahead_s, config.clock_skew_event_s
        )
        self._sleep = sleep
        self._on_commit = on_commit

    def backoff(self) -> Backoff:
        return Backoff(self.config.retry_initial_s, self.config.retry_max_s, sleep=self._sleep)

    def check_alive(self, session: Session) -> None:
        if session.lost or session.channel.is_closed:
            raise Abandoned("broker channel closed; the batch will be redelivered")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise Abandoned("shutdown deadline passed; the batch will be redelivered")

    async def process(
        self,
        batch: Sequence[Delivery],
        session: Session,
        previous: Turn | None,
        turn: Turn,
    ) -> None:
        """Lock after ``previous`` has locked, write, then ack once ``previous`` has acked;
        ``turn`` tells the next batch the same of this one."""
        decoded, invalid = decode_batch(batch)
        acked = False
        try:
            outcome = await self._write_all(decoded, session, previous, turn)
            if previous is not None and not await previous.settled:
                # Acking now would cover the earlier, unacked tags: leave this one too.
                raise Abandoned("an earlier batch was not acked; this one will be redelivered")
            self.check_alive(session)
            rejected = invalid + outcome.poisoned
            for plan in outcome.plans:
                rejected.extend(plan.rejected)
            await self._settle(batch, rejected, session)
            acked = True
        except Abandoned as exc:
            log.warning("%s (%d messages)", exc, len(batch), extra={"batch_size": len(batch)})
            return
        finally:
            _resolve(turn.locked, None)  # nothing written, or not at all: the next may go
            _resolve(turn.settled, acked)
        self._account(outcome, rejected, len(batch))

    async def _write_all(
        self, decoded: list[Decoded], session: Session, previous: Turn | None, turn: Turn
    ) -> _Outcome:
        """Write, splitting on a poison row until the offending message stands alone."""
        outcome = _Outcome()
        parts: list[list[Decoded]] = [decoded] if decoded else []
        while parts:
            part = parts.pop()
            try:
                plan, result = await self._write_with_retry(part, session, previous, turn)
            except PoisonRowError as exc:
                if len(part) == 1:
                    log.warning(
                        "database refused message %d: %s",
                        part[0].delivery.tag,
                        exc,
                        extra={
                            "reason": "refused_by_database",
                            "routing_key": part[0].delivery.routing_key,
                        },
                    )
                    outcome.poisoned.append(
                        Rejection(part[0].delivery, "refused_by_database", str(exc), "invalid")
                    )
                    continue
                middle = len(part) // 2
                parts.append(part[middle:])
                parts.append(part[:middle])
                continue
            outcome.plans.append(plan)
            outcome.results.append(result)
        return outcome

    async def _write_with_retry(
        self, part: list[Decoded], session: Session, previous: Turn | None, turn: Turn
    ) -> tuple[Plan, WriteResult]:
        backoff = self.backoff()
        while True:
            started = time.perf_counter()
            try:
                written = await self._write(part, previous, turn)
            except PoisonRowError:
                raise
            except (ServiceUnavailable, StoreError) as exc:
                self.metrics.db_retries.inc()
                log.warning(
                    "batch of %d not written, retrying: %s",
                    len(part),
                    exc,
                    extra={"batch_size": len(part), "reason": type(exc).__name__},
                )
                self.check_alive(session)
                await backoff.wait()
                self.check_alive(session)
                continue
            self.metrics.commit_seconds.observe(time.perf_counter() - started)
            return written

    async def _write(
        self, part: list[Decoded], previous: Turn | None, turn: Turn
    ) -> tuple[Plan, WriteResult]:
        """Lock the part's agents, plan against what is locked, write: one transaction."""
        agent_ids = sorted({item.message.agent_id for item in part})
        config = self.config
        if previous is not None:
            await previous.locked
        async with self.db.connection() as conn:
            for _ in range(REPLAN_ATTEMPTS):
                async with locked_batch(conn, agent_ids) as batch:
                    _resolve(turn.locked, None)
                    plan = plan_batch(
                        part,
                        batch.state,
                        require_user_id=config.require_user_id,
                        gpu_pool=config.default_gpu_pool,
                        cpu_pool=config.default_cpu_pool,
                        clock=self.clock_bounds,
                        clash_quiet_s=config.offline_after_s,
                    )
                    result = await batch.write(plan.write)
                if result is not None:
                    return plan, result
                # A new agent of the part was registered concurrently: rolled back, again.
        raise StoreError("agents kept being registered concurrently while writing a batch")

    async def _settle(
        self, batch: Sequence[Delivery], rejected: list[Rejection], session: Session
    ) -> None:
        """Dead-letter the rejected (with their reason), then ack the rest in one frame."""
        individually_rejected: set[int] = set()
        if rejected and session.dead_letters.is_closed:
            # The broker closed it (say, the dead-letter exchange was deleted): try anew.
            with contextlib.suppress(*AMQP_CONNECTION_ERRORS):
                session.dead_letters = await session.connection.channel(publisher_confirms=True)
        for rejection in rejected:
            log_rejection(rejection)
            if not await dead_letter(session.dead_letters, rejection):
                await session.channel.basic_reject(rejection.delivery.tag, requeue=False)
                individually_rejected.add(rejection.delivery.tag)
        tags = [d.tag for d in batch if d.tag not in individually_rejected]
        if tags:
            await session.channel.basic_ack(max(tags), multiple=True)

    def _account(self, outcome: _Outcome, rejected: list[Rejection], size: int) -> None:
        m = self.metrics
        stored = sum(r.samples_stored for r in outcome.results)
        duplicate = sum(r.samples_duplicate for r in outcome.results)
        goodbyes = sum(p.goodbyes for p in outcome.plans)
        m.messages.labels("stored").inc(stored + goodbyes)
        if duplicate:
            m.messages.labels("duplicate").inc(duplicate)
        for rejection in rejected:
            m.messages.labels(rejection.result).inc()
            m.dead_letters.labels(rejection.reason).inc()
        m.batch_size.observe(size)
        heartbeats: list[Heartbeat] = []
        for plan in outcome.plans:
            for agent_id, run, other in plan.clashes:
                m.identity_clashes.inc()
                security_log.warning(
                    "identity clash: agent %s is heard from two runs at once (%s and %s):"
                    " two machines share its agent_id (a cloned disk or a copied state dir?);"
                    " both keep their samples, the agent is flagged until one goes quiet",
                    agent_id,
                    run,
                    other,
                    extra={"agent_id": str(agent_id)},
                )
        observe_lag = m.lag_seconds.observe
        observe_offset = m.clock_offset_seconds.observe
        bounds = self.clock_bounds
        for plan in outcome.plans:
            for item in plan.heartbeats:
                message = item.message
                assert isinstance(message, Heartbeat)
                heartbeats.append(message)
                received = item.delivery.received_at
                observe_lag((received - message.sampled_at).total_seconds())
                observe_offset(abs(clock_offset_s(message, received)))
                if bounds.skewed(message, received):
                    m.clock_skewed.inc()
        on_commit = self._on_commit()
        if on_commit is not None:
            on_commit(
                CommitReport(
                    heartbeats,
                    stored,
                    duplicate,
                    rejected,
                    time.time(),
                    sum(r.events for r in outcome.results),
                    size,
                )
            )


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)
