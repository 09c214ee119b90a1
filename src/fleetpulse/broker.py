"""What agent and ingest both know of the broker: which errors mean "the connection failed".

Its own module so that neither side imports the other, and the store and the API, which
never talk to the broker, do not load aiormq.
"""

from __future__ import annotations

import asyncio
from typing import Final

import aiormq

__all__ = ["AMQP_CONNECTION_ERRORS"]

# Faults of the broker connection: reconnect (with backoff), never crash.
AMQP_CONNECTION_ERRORS: Final = (
    aiormq.exceptions.AMQPError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)
