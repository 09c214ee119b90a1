"""The broker topology ingest owns, declared idempotently on every (re)connect."""

from __future__ import annotations

import logging
from typing import Any, Final, Literal

import aiormq
import aiormq.abc

from fleetpulse.messages import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, EXCHANGE, INGEST_QUEUE

__all__ = ["BINDING_KEY", "QueueType", "declare_topology"]

log = logging.getLogger(__name__)

BINDING_KEY: Final = "heartbeat.#"
QueueType = Literal["quorum", "classic"]


async def declare_topology(connection: aiormq.abc.AbstractConnection) -> QueueType:
    """Dead-letter exchange and queue first (the ingest queue names them), then the heartbeat
    exchange and the ingest queue. Both queues are quorum queues (on a cluster, replicated on
    every node: a node lost loses neither), each falling back to a classic durable queue on a
    broker that refuses quorum queues or where it exists as classic already (declared by an
    older ingest). Returns the ingest queue's type."""
    channel = await connection.channel()
    try:
        await channel.exchange_declare(
            exchange=DEAD_LETTER_EXCHANGE, exchange_type="fanout", durable=True
        )
        await channel.exchange_declare(exchange=EXCHANGE, exchange_type="topic", durable=True)
    finally:
        await channel.close()
    await _declare_queue(connection, DEAD_LETTER_QUEUE, {}, DEAD_LETTER_EXCHANGE, "#")
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
                channel = await connection.channel()
                await channel.queue_declare(name, passive=True)
        await channel.queue_bind(name, exchange, routing_key=routing_key)
    finally:
        if not channel.is_closed:
            await channel.close()
    return queue_type
