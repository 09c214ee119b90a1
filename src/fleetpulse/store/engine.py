"""Connections to TimescaleDB: the pool, error translation and edition detection."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, Final, Literal, Self

import psycopg
import psycopg.errors
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from fleetpulse.config import DatabaseSettings, mask_url
from fleetpulse.errors import PoisonRowError, ServiceUnavailable, StoreError

__all__ = [
    "RETRYABLE_DB_ERRORS",
    "Database",
    "Edition",
    "connect",
    "detect_edition",
    "map_db_errors",
    "open_session",
]

Edition = Literal["apache", "timescale"]

FIX_HINT: Final = "start it with 'make services' or set FLEETPULSE_DATABASE_URL"

# Faults of the connection or the server's state, not of what was sent: retry these.
RETRYABLE_DB_ERRORS: Final = (
    psycopg.OperationalError,
    psycopg.errors.AdminShutdown,
    psycopg.errors.CannotConnectNow,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    PoolTimeout,
)
# Faults of what was sent: the same batch will fail again.
_CONTENT_ERRORS: Final = (
    psycopg.errors.DataError,
    psycopg.errors.IntegrityError,
)


@contextlib.contextmanager
def map_db_errors(url: str) -> Iterator[None]:
    """Translate psycopg errors at the store boundary into fleetpulse's own."""
    try:
        yield
    except RETRYABLE_DB_ERRORS as exc:
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServiceUnavailable("database", mask_url(url), cause, FIX_HINT) from exc
    except _CONTENT_ERRORS as exc:
        raise PoisonRowError(str(exc).strip()) from exc
    except psycopg.Error as exc:
        raise StoreError(str(exc).strip()) from exc


def session_options(statement_timeout_s: float | None) -> dict[str, Any]:
    """libpq ``options`` that set the server-side statement timeout of every session."""
    if statement_timeout_s is None:
        return {}
    return {"options": f"-c statement_timeout={max(1, round(statement_timeout_s * 1000))}"}


async def connect(
    url: str,
    *,
    autocommit: bool = True,
    timeout_s: float = 5.0,
    statement_timeout_s: float | None = None,
) -> psycopg.AsyncConnection[TupleRow]:
    """One connection, with failures as a single clear :class:`ServiceUnavailable`."""
    with map_db_errors(url):
        return await psycopg.AsyncConnection.connect(
            url,
            autocommit=autocommit,
            connect_timeout=max(1, round(timeout_s)),
            **session_options(statement_timeout_s),
        )


async def detect_edition(conn: psycopg.AsyncConnection[TupleRow]) -> Edition:
    """``apache`` or ``timescale`` (Community/TSL), from ``SHOW timescaledb.license``."""
    cur = await conn.execute("SHOW timescaledb.license")
    row = await cur.fetchone()
    license_name = str(row[0]) if row else "apache"
    return "timescale" if license_name == "timescale" else "apache"


async def open_session(
    settings: DatabaseSettings,
) -> tuple[psycopg.AsyncConnection[TupleRow], Edition]:
    """One connection with the settings' timeouts, and the edition found on it."""
    conn = await connect(
        settings.url,
        timeout_s=settings.connect_timeout_s,
        statement_timeout_s=settings.statement_timeout_s,
    )
    try:
        with map_db_errors(settings.url):
            return conn, await detect_edition(conn)
    except BaseException:
        await conn.close()
        raise


class Database:
    """A pool of connections with the TimescaleDB edition found at connect time.

    Use as ``async with Database(settings) as db``; states: new → open → closed.
    """

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        self.url = settings.url
        self.edition: Edition = "apache"
        self.state: Literal["new", "open", "closed"] = "new"
        self._pool: AsyncConnectionPool | None = None

    @property
    def pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise StoreError("database is not open")
        return self._pool

    async def open(self) -> None:
        # Probe once so a missing server is one clear line, not a pool retrying forever.
        probe, self.edition = await open_session(self.settings)
        await probe.close()
        self._pool = AsyncConnectionPool(
            self.url,
            min_size=self.settings.pool_min_size,
            max_size=max(self.settings.pool_min_size, self.settings.pool_max_size),
            kwargs={"autocommit": True, **session_options(self.settings.statement_timeout_s)},
            open=False,
            timeout=self.settings.connect_timeout_s,
        )
        with map_db_errors(self.url):
            await self._pool.open(wait=True, timeout=self.settings.connect_timeout_s)
        self.state = "open"

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        self.state = "closed"

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
        """A pooled connection; errors inside are mapped at this boundary."""
        with map_db_errors(self.url):
            async with self.pool.connection() as conn:
                yield conn
