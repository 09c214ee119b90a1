"""The broker topology ingest owns: declared on every (re)connect, checked and repaired while
consuming.

Agents may configure nothing (their broker users have no configure permission), so only a
user with configure permission can delete or re-declare the heartbeat exchange. Should that
happen anyway (an operator's mistake, an old agent credential), ingest notices on its next
check: a missing exchange is declared again, one re-declared with other properties is
deleted and declared as it must be, and the ingest queue's binding is asserted again every
check (``queue.bind`` is idempotent). Each repair is logged as an error and counted; a
problem ingest cannot repair keeps ``/readyz`` failing and ``topology_ok`` at 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import aiormq
import aiormq.abc

from fleetpulse.messages import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, EXCHANGE, INGEST_QUEUE

__all__ = [
    "BINDING_KEY",
    "DeadLetterLimits",
    "QueueType",
    "TopologyChannels",
    "TopologyReport",
    "check_topology",
    "declare_topology",
]

log = logging.getLogger(__name__)

BINDING_KEY: Final = "heartbeat.#"
QueueType = Literal["quorum", "classic"]


@dataclass(frozen=True, slots=True)
class DeadLetterLimits:
    """``fleetpulse.dead`` keeps at most this many messages and bytes; past either, the
    oldest dead letters are dropped (``drop-head``): the newest say most about a fault, and
    ingest is never blocked by a full dead-letter queue."""

    max_messages: int = 100_000
    max_bytes: int = 256 * 1024 * 1024

    def arguments(self) -> dict[str, Any]:
        return {
            "x-max-length": self.max_messages,
            "x-max-length-bytes": self.max_bytes,
            "x-overflow": "drop-head",
        }


@dataclass(slots=True)
class TopologyReport:
    """What one check found and did; ``problems`` it could not repair keep ingest unready."""

    repaired: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class TopologyChannels:
    """Channels on one connection, reused while open: a check on a healthy broker opens none
    (opening and closing one every few seconds beside the consumer is churn for nothing)."""

    def __init__(self, connection: aiormq.abc.AbstractConnection) -> None:
        self.connection = connection
        self.current: aiormq.abc.AbstractChannel | None = None

    async def get(self) -> aiormq.abc.AbstractChannel:
        """The open channel, or a new one when the broker closed it (after an error)."""
        if self.current is None or self.current.is_closed:
            self.current = await self.connection.channel()
        return self.current

    async def close(self) -> None:
        if self.current is not None and not self.current.is_closed:
            await self.current.close()
        self.current = None


async def _ensure_exchange(
    channels: TopologyChannels, report: TopologyReport, *, expected: bool
) -> None:
    """The heartbeat exchange, as ingest declares it. ``expected``: it was declared before,
    so finding it missing is a fault to report, not the first start."""
    try:
        await (await channels.get()).exchange_declare(exchange=EXCHANGE, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        if expected:
            report.repaired.append("exchange_missing")
            log.error(
                "topology: exchange %s was deleted (every heartbeat was unroutable);"
                " declaring it again",
                EXCHANGE,
            )
        await (await channels.get()).exchange_declare(
            exchange=EXCHANGE, exchange_type="topic", durable=True
        )
        return
    # There: an active declare of the same properties is how to learn they are still the
    # same (a passive one succeeds whatever the type).
    try:
        await (await channels.get()).exchange_declare(
            exchange=EXCHANGE, exchange_type="topic", durable=True
        )
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        await _redeclare(channels, report, str(exc))


async def _redeclare(channels: TopologyChannels, report: TopologyReport, why: str) -> None:
    report.repaired.append("exchange_mismatch")
    log.error(
        "topology: exchange %s was re-declared with other properties (%s);"
        " deleting it and declaring it as a durable topic exchange",
        EXCHANGE,
        why,
    )
    channel = await channels.get()
    await channel.exchange_delete(EXCHANGE)
    await channel.exchange_declare(exchange=EXCHANGE, exchange_type="topic", durable=True)


async def declare_topology(
    connection: aiormq.abc.AbstractConnection,
    limits: DeadLetterLimits | None = None,
    report: TopologyReport | None = None,
) -> QueueType:
    """Dead-letter exchange and queue first (the ingest queue names them), then the heartbeat
    exchange and the ingest queue. Both queues are quorum queues (on a cluster, replicated on
    every node: a node lost loses neither), each falling back to a classic durable queue on a
    broker that refuses quorum queues or where it exists as classic already (declared by an
    older ingest). The dead-letter queue is bounded (``limits``). Returns the ingest queue's
    type."""
    channel = await connection.channel()
    try:
        await channel.exchange_declare(
            exchange=DEAD_LETTER_EXCHANGE, exchange_type="fanout", durable=True
        )
    finally:
        await channel.close()
    channels = TopologyChannels(connection)
    try:
        await _ensure_exchange(channels, report or TopologyReport(), expected=False)
    finally:
        await channels.close()
    dead = (limits or DeadLetterLimits()).arguments()
    await _declare_queue(connection, DEAD_LETTER_QUEUE, dead, DEAD_LETTER_EXCHANGE, "#")
    return await _declare_queue(
        connection,
        INGEST_QUEUE,
        {"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE},
        EXCHANGE,
        BINDING_KEY,
    )


async def _declare_queue(
    connection: aiormq.abc.AbstractConnection,
    name: str,
    arguments: dict[str, Any],
    exchange: str,
    routing_key: str,
) -> QueueType:
    queue_type: QueueType = "quorum"
    channel = await connection.channel()
    try:
        try:
            await channel.queue_declare(
                name, durable=True, arguments={"x-queue-type": "quorum", **arguments}
            )
        except aiormq.exceptions.ChannelClosed as exc:
            # The broker closed the channel: no quorum queues here, or the queue exists as
            # classic already. Either way a classic declare (or a passive one) settles it.
            log.warning("quorum queue %s refused (%s); using a classic queue", name, exc)
            queue_type = "classic"
            channel = await connection.channel()
            try:
                await channel.queue_declare(name, durable=True, arguments=arguments)
            except aiormq.exceptions.ChannelClosed:
                if "x-max-length" in arguments:
                    # Declared by an older ingest without its limits: arguments of a queue
                    # cannot change, a policy can add them.
                    log.warning(
                        "queue %s exists without its length limit; add it with: rabbitmqctl"
                        " set_policy fleetpulse-dead '^%s$' '{\"max-length\": %d,"
                        ' "max-length-bytes": %d, "overflow": "drop-head"}\''
                        " --apply-to queues",
                        name,
                        name.replace(".", "\\\\."),
                        arguments["x-max-length"],
                        arguments["x-max-length-bytes"],
                    )
                channel = await connection.channel()
                await channel.queue_declare(name, passive=True)
        await channel.queue_bind(name, exchange, routing_key=routing_key)
    finally:
        if not channel.is_closed:
            await channel.close()
    return queue_type


async def check_topology(channels: TopologyChannels) -> TopologyReport:
    """While consuming: the exchange is there as declared (else repaired) and the ingest
    queue bound to it. A repair ingest is not allowed to make is reported in ``problems``."""
    report = TopologyReport()
    try:
        await _ensure_exchange(channels, report, expected=True)
        await (await channels.get()).queue_bind(INGEST_QUEUE, EXCHANGE, routing_key=BINDING_KEY)
    except (aiormq.exceptions.ChannelClosed, aiormq.exceptions.ChannelInvalidStateError) as exc:
        report.problems.append(f"topology check failed: {exc}")
        log.error("topology: %s cannot be checked or repaired: %s", EXCHANGE, exc)
    return report
