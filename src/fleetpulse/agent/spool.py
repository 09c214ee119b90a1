"""The spool: every sample waits here until the broker has confirmed it.

A bounded FIFO of encoded messages. The agent appends each sample; the publisher
reads from the head, publishes, and removes an entry only after its confirm, so an
outage, a crash or a restart loses nothing that fits. Past ``max_bytes`` the oldest
entries are dropped and counted. ``next_seq`` hands out the heartbeat sequence and
survives restarts with the spool.

``SqliteSpool`` keeps it in ``spool.sqlite3`` in the state dir (WAL, one transaction
per change: a killed agent loses at most the sample it was writing). ``MemorySpool``
has the same face for ``simulate`` and unit tests.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple, Protocol

from fleetpulse.errors import ConfigError

__all__ = ["MemorySpool", "Spool", "SpoolEntry", "SqliteSpool"]


class SpoolEntry(NamedTuple):
    id: int
    body: bytes


class Spool(Protocol):
    @property
    def depth(self) -> int: ...
    @property
    def dropped_total(self) -> int: ...
    def push(self, body: bytes) -> None: ...
    def peek(self, limit: int) -> list[SpoolEntry]: ...
    def remove(self, ids: Iterable[int]) -> None: ...
    def next_seq(self) -> int: ...
    def close(self) -> None: ...


class MemorySpool:
    def __init__(self, max_bytes: int = 64 * 1024 * 1024, *, first_seq: int = 0) -> None:
        self.max_bytes = max_bytes
        self._entries: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._bytes = 0
        self._last_id = 0
        self._seq = first_seq
        self.dropped_total = 0

    @property
    def depth(self) -> int:
        return len(self._entries)

    def push(self, body: bytes) -> None:
        if len(body) > self.max_bytes:
            self.dropped_total += 1
            return
        while self._entries and self._bytes + len(body) > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= len(old)
            self.dropped_total += 1
        self._last_id += 1
        self._entries[self._last_id] = body
        self._bytes += len(body)

    def peek(self, limit: int) -> list[SpoolEntry]:
        out: list[SpoolEntry] = []
        for entry_id, body in self._entries.items():
            if len(out) >= limit:
                break
            out.append(SpoolEntry(entry_id, body))
        return out

    def remove(self, ids: Iterable[int]) -> None:
        for entry_id in ids:
            body = self._entries.pop(entry_id, None)
            if body is not None:
                self._bytes -= len(body)

    def next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('next_seq', 0), ('dropped_total', 0);
"""


class SqliteSpool:
    def __init__(self, path: str | Path, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # a queue read at its head: a small page cache does (the default is 2 MiB)
            self._db.execute("PRAGMA cache_size=-256")
            self._db.executescript(_SCHEMA)
            count, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM spool"
            ).fetchone()
        except sqlite3.Error as exc:
            raise ConfigError(
                f"spool {self.path} cannot be used ({exc}); move it away to start empty"
            ) from None
        self._depth, self._bytes = int(count), int(size)
        self._dropped = self._meta("dropped_total")

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0])

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def dropped_total(self) -> int:
        return self._dropped

    def push(self, body: bytes) -> None:
        db = self._db
        dropped = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            if len(body) > self.max_bytes:
                dropped = 1
            else:
                while self._depth and self._bytes + len(body) > self.max_bytes:
                    row = db.execute(
                        "DELETE FROM spool WHERE id = (SELECT MIN(id) FROM spool) "
                        "RETURNING LENGTH(body)"
                    ).fetchone()
                    self._bytes -= int(row[0])
                    self._depth -= 1
                    dropped += 1
                db.execute("INSERT INTO spool (body) VALUES (?)", (body,))
                self._bytes += len(body)
                self._depth += 1
            if dropped:
                db.execute(
                    "UPDATE meta SET value = value + ? WHERE key = 'dropped_total'", (dropped,)
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._dropped += dropped

    def peek(self, limit: int) -> list[SpoolEntry]:
        rows = self._db.execute("SELECT id, body FROM spool ORDER BY id LIMIT ?", (limit,))
        return [SpoolEntry(int(i), bytes(b)) for i, b in rows]

    def remove(self, ids: Iterable[int]) -> None:
        wanted = [(i,) for i in ids]
        if not wanted:
            return
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            removed = 0
            for params in wanted:
                row = db.execute(
                    "DELETE FROM spool WHERE id = ? RETURNING LENGTH(body)", params
                ).fetchone()
                if row is not None:
                    removed += 1
                    self._bytes -= int(row[0])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._depth -= removed

    def next_seq(self) -> int:
        row = self._db.execute(
            "UPDATE meta SET value = value + 1 WHERE key = 'next_seq' RETURNING value - 1"
        ).fetchone()
        return int(row[0])

    def close(self) -> None:
        self._db.close()
