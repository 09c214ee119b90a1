"""The publisher: spool → broker, in order, each entry removed only after its confirm.

Design (outages lose nothing):

* Every sample goes into the spool first, connected or not. One task, ``run``, owns
  the AMQP connection: it connects (plain ``aio_pika.connect``, our own loop, not
  ``connect_robust``, so that what is in flight is always known), declares the
  exchange (topic, durable, as ingest does) on a channel with publisher confirms,
  then sends the spool head in batches of ``batch_size`` and removes exactly the
  entries the broker confirmed. Batches go out in spool order (aiormq serialises
  publishes on a channel behind a FIFO lock), so spooled samples precede live ones.
* A lost connection, a refused connect or a confirm that does not come within
  ``confirm_timeout_s`` closes the connection; the loop moves to the next broker URL
  (with several, the nodes of a cluster; the first is picked at random), waits a capped,
  fully jittered exponential backoff and reconnects. Entries not confirmed stay in the spool and go
  again (at-least-once; ingest stores a replay once, keyed on ``(agent_id, sampled_at,
  incarnation)``).
* A message the broker returns as unroutable (no queue bound yet: ingest never ran)
  stays in the spool too, and is retried after a backoff on the same connection.
* ``sent_at`` is set when a message leaves (``prepare``); ``sampled_at`` is never
  touched. Messages are persistent, JSON, with ``user_id`` = the connection's user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractExchange

from fleetpulse.agent.heartbeat import restamp
from fleetpulse.agent.spool import Spool
from fleetpulse.broker import AMQP_CONNECTION_ERRORS, BrokerUrls
from fleetpulse.config import Settings, mask_url
from fleetpulse.errors import MessageError
from fleetpulse.lifecycle import Backoff
from fleetpulse.messages import EXCHANGE

__all__ = ["CONNECTION_EXCEPTIONS", "Publisher"]

log = logging.getLogger(__name__)

# The house's tuple, plus what aio-pika itself counts as a failed connection.
CONNECTION_EXCEPTIONS: Final = (
    *AMQP_CONNECTION_ERRORS,
    *aio_pika.exceptions.CONNECTION_EXCEPTIONS,
)

Prepare = Callable[[bytes, datetime], tuple[bytes, str]]

BATCH_SIZE: Final = 256


class _Unroutable(Exception):
    pass


class _NoExchange(aiormq.exceptions.AMQPError):
    """The heartbeat exchange is missing: keep spooling and retry, as if disconnected."""


class Publisher:
    def __init__(
        self,
        url: str | Sequence[str],
        spool: Spool,
        *,
        now: Callable[[], datetime],
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        confirm_timeout_s: float = 10.0,
        batch_size: int = BATCH_SIZE,
        prepare: Prepare = restamp,
        rng: random.Random | None = None,
    ) -> None:
        self.brokers = BrokerUrls(url, rng=rng)
        self._spool = spool
        self._now = now
        self._backoff = Backoff(reconnect_initial_s, reconnect_max_s, rng=rng)
        self.connect_timeout_s = connect_timeout_s
        self.confirm_timeout_s = confirm_timeout_s
        self.batch_size = batch_size
        self._prepare = prepare
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._lost = asyncio.Event()
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self._failing = False
        self.last_error: str | None = None  # why the last connect or send failed
        self.connections_total = 0
        self.reconnects_total = 0
        self.published_total = 0
        self.corrupt_total = 0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        spool: Spool,
        *,
        now: Callable[[], datetime],
        batch_size: int = BATCH_SIZE,
    ) -> Self:
        """A publisher to ``[amqp] urls`` (else ``url``) with the ``[agent]`` reconnect and
        timeout settings."""
        agent = settings.agent
        return cls(
            settings.amqp.broker_urls(),
            spool,
            now=now,
            reconnect_initial_s=agent.reconnect_initial_s,
            reconnect_max_s=agent.reconnect_max_s,
            connect_timeout_s=agent.connect_timeout_s,
            confirm_timeout_s=agent.confirm_timeout_s,
            batch_size=batch_size,
        )

    @property
    def url(self) -> str:
        """The broker URL of the current (or next) connection."""
        return self.brokers.current

    @property
    def user(self) -> str:
        """The broker user of that URL: every message's ``user_id``."""
        return unquote(urlsplit(self.url).username or "guest")

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self.run(), name="fleetpulse-publisher")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._disconnect()

    def wake(self) -> None:
        """A new entry is in the spool."""
        self._wake.set()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until the spool is empty; False if it is not within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self.wake()
        while self._spool.depth:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except TimeoutError:
                return False
        return True

    async def send_direct(self, body: bytes, routing_key: str, timeout_s: float) -> bool:
        """Publish one message now, bypassing the spool (the goodbye); best effort."""
        exchange = self._exchange
        if exchange is None or self._lost.is_set():
            return False
        try:
            await asyncio.wait_for(exchange.publish(self._message(body), routing_key), timeout_s)
        except (*CONNECTION_EXCEPTIONS, aio_pika.exceptions.PublishError) as exc:
            log.info("goodbye not delivered: %s", exc or type(exc).__name__)
            return False
        return True

    def _message(self, body: bytes) -> aio_pika.Message:
        return aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            user_id=self.user,
        )

    async def run(self) -> None:
        while True:
            try:
                await self._connect()
                await self._serve()
            except CONNECTION_EXCEPTIONS as exc:
                reason = str(exc) or type(exc).__name__
                self.last_error = reason
                if self.connected.is_set():
                    log.warning(
                        "broker connection lost (%s); spooling", reason, extra={"reason": reason}
                    )
                elif not self._failing:
                    log.warning(
                        "broker at %s unreachable (%s); spooling, retrying with backoff",
                        mask_url(self.url),
                        reason,
                        extra={"url": mask_url(self.url), "reason": reason},
                    )
                else:
                    log.debug("broker still unreachable (%s)", reason)
                self._failing = True
                self.brokers.advance()
            except Exception:  # a bug must not stop delivery for good: log it, reconnect
                log.exception("publisher failed unexpectedly; reconnecting")
            self.connected.clear()
            await self._disconnect()
            await self._backoff.wait()

    async def _connect(self) -> None:
        self._lost.clear()
        connection = await aio_pika.connect(self.url, timeout=self.connect_timeout_s)
        self._connection = connection
        connection.close_callbacks.add(self._on_close)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            self._exchange = await channel.declare_exchange(EXCHANGE, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise _NoExchange(
                f"exchange {EXCHANGE} does not exist yet (ingest declares it)"
            ) from exc
        self.connections_total += 1
        if self.connections_total > 1:
            self.reconnects_total += 1
            log.info(
                "reconnected to the broker; %d samples spooled",
                self._spool.depth,
                extra={"spooled": self._spool.depth},
            )
        self._backoff.reset()
        self._failing = False
        self.connected.set()

    def _on_close(self, *_: Any) -> None:
        self._lost.set()
        self._wake.set()

    async def _disconnect(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(*CONNECTION_EXCEPTIONS):
                await asyncio.wait_for(connection.close(), 2.0)

    async def _serve(self) -> None:
        assert self._exchange is not None
        exchange = self._exchange
        while True:
            if self._lost.is_set():
                raise ConnectionError("connection closed")
            batch = self._spool.peek(self.batch_size)
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._send(exchange, batch)
            except _Unroutable as exc:
                delay = self._backoff.next_delay()
                log.warning("%s; keeping samples, retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
            else:
                self._backoff.reset()

    async def _send(self, exchange: AbstractExchange, batch: list[Any]) -> None:
        now = self._now()
        ids: list[int] = []
        tasks: list[asyncio.Task[Any]] = []
        corrupt: list[int] = []
        for entry in batch:
            try:
                body, key = self._prepare(entry.body, now)
            except MessageError as exc:
                log.error("dropping a corrupt spool entry: %s", exc)
                corrupt.append(entry.id)
                continue
            ids.append(entry.id)
            tasks.append(asyncio.ensure_future(exchange.publish(self._message(body), key)))
        if corrupt:
            self.corrupt_total += len(corrupt)
            self._spool.remove(corrupt)
        if not tasks:
            return
        try:
            done, pending = await asyncio.wait(tasks, timeout=self.confirm_timeout_s)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        confirmed = [
            i for i, t in zip(ids, tasks, strict=True) if t in done and t.exception() is None
        ]
        self._spool.remove(confirmed)
        self.published_total += len(confirmed)
        self._progress.set()
        failures = [e for t in tasks if t in done and (e := t.exception()) is not None]
        if pending:
            raise TimeoutError(f"no confirm within {self.confirm_timeout_s:g}s")
        if failures:
            first = failures[0]
            if isinstance(first, aio_pika.exceptions.PublishError):
                raise _Unroutable(f"broker returned a message as unroutable ({first})")
            raise first
