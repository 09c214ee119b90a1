"""The broker topology ingest owns, declared idempotently on every (re)connect."""

from __future__ import annotations

import logging
from typing import Final, Literal

import aiormq
import aiormq.abc

from fleetpulse.messages import DEAD_LETTER_EXCHANGE, DEAD_LETTER_QUEUE, EXCHANGE, INGEST_QUEUE

__all__ = ["BINDING_KEY", "QueueType", "declare_topology"]

log = logging.getLogger(__name__)

BINDING_KEY: Final = "heartbeat.#"
QueueType = Literal["quorum", "classic"]


async def declare_topology(connection: aiormq.abc.AbstractConnection) -> QueueType:
    """Dead-letter exchange and queue first (the ingest queue names them), then the heartbeat
    exchange and a quorum ingest queue, falling back to a classic durable queue on a broker
    that refuses quorum queues. Returns the queue type in use."""
    channel = await connection.channel()
    try:
        await channel.exchange_declare(
            exchange=DEAD_LETTER_EXCHANGE, exchange_type="fanout", durable=True
        )
        await channel.queue_declare(DEAD_LETTER_QUEUE, durable=True)
        await channel.queue_bind(DEAD_LETTER_QUEUE, DEAD_LETTER_EXCHANGE, routing_key="#")
        await channel.exchange_declare(exchange=EXCHANGE, exchange_type="topic", durable=True)
    finally:
        await channel.close()
    queue_type: QueueType = "quorum"
    channel = await connection.channel()
    try:
        try:
            await channel.queue_declare(
                INGEST_QUEUE,
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
                },
            )
        except aiormq.exceptions.ChannelClosed as exc:
            # The broker closed the channel: no quorum queues here, or the queue exists as
            # classic already. Either way a classic declare (or a passive one) settles it.
            log.warning("quorum queue %s refused (%s); using a classic queue", INGEST_QUEUE, exc)
            queue_type = "classic"
            channel = await connection.channel()
            try:
                await channel.queue_declare(
                    INGEST_QUEUE,
                    durable=True,
                    arguments={"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE},
                )
            except aiormq.exceptions.ChannelClosed:
                channel = await connection.channel()
                await channel.queue_declare(INGEST_QUEUE, passive=True)
        await channel.queue_bind(INGEST_QUEUE, EXCHANGE, routing_key=BINDING_KEY)
    finally:
        if not channel.is_closed:
            await channel.close()
    return queue_type
