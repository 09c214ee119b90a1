"""What agent and ingest both know of the broker: which errors mean "the connection failed",
and which node of a cluster to connect to next (:class:`BrokerUrls`).

Its own module so that neither side imports the other, and the store and the API, which
never talk to the broker, do not load aiormq.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Final

import aiormq

__all__ = ["AMQP_CONNECTION_ERRORS", "BrokerUrls"]

# Faults of the broker connection: reconnect (with backoff), never crash.
AMQP_CONNECTION_ERRORS: Final = (
    aiormq.exceptions.AMQPError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


# Several broker URLs (the nodes of one RabbitMQ cluster): agents, simulate and ingest each
# hold a BrokerUrls and connect to ``current``. A fleet spreads over the nodes at start (each
# process picks a random first node), and a process whose connection is lost or refused moves
# to the next node before its (capped, jittered) backoff, so it is back within one backoff
# when another node serves. One URL behaves exactly as before.
class BrokerUrls:
    """A ring of broker URLs; ``current`` is the one to connect to, ``advance()`` moves on."""

    def __init__(self, urls: str | Sequence[str], *, rng: random.Random | None = None) -> None:
        listed = (urls,) if isinstance(urls, str) else tuple(urls)
        if not listed:
            raise ValueError("at least one broker URL is needed")
        self.urls: tuple[str, ...] = listed
        # one URL draws nothing: a caller's seeded rng (shared with a backoff) stays as it was
        self.index = (rng or random.Random()).randrange(len(listed)) if len(listed) > 1 else 0
        self.moves = 0

    @property
    def current(self) -> str:
        return self.urls[self.index]

    def advance(self) -> str:
        """The next URL in the ring (the same one when there is only one)."""
        if len(self.urls) > 1:
            self.index = (self.index + 1) % len(self.urls)
            self.moves += 1
        return self.current

    def __len__(self) -> int:
        return len(self.urls)
