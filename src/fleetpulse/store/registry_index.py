"""An in-process index of the registry that answers capacity queries in well under a millisecond.

Why: at 100k agents a selective or empty capacity filter makes PostgreSQL scan the registry
(20–35 ms; 160–200 ms at 1M) and per-request SQL caps the API far below its framework ceiling.
The index keeps one column per filterable quantity (numpy, one slot per agent) and, per
change, the online agents laid out in the sort order (free VRAM desc, available cores desc,
agent_id), all of them and each pool apart. A query compares a prefix of those columns in
blocks that start small (a common query needs one block of ~64) and grow with how rarely
rows match, then checks its candidates GPU by GPU in one vectorised step; Python touches only
the rows returned.

:class:`RegistryIndex` is pure (no I/O). :class:`RegistryFollower` keeps one fresh from the
database: a full load at start, then on every ``fleetpulse_registry`` notification (and at
least every ``poll_interval_s``) it fetches the rows whose ``updated_at`` moved, at most once
per ``refresh_interval_s``; a full reload every ``resync_interval_s`` drops deleted agents.
A full read is decoded, indexed and sorted in a worker thread into a fresh index that then
replaces the served one whole, so requests are not held up for the seconds it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
import uuid
from collections.abc import Container, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Final, Self

import msgspec
import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.rows import TupleRow

from fleetpulse.errors import FleetpulseError
from fleetpulse.store.engine import RETRYABLE_DB_ERRORS, Database, connect
from fleetpulse.store.queries import (
    REGISTRY_COLUMNS,
    AgentRecord,
    fetch_registry,
    fetch_reliability,
    fetch_silenced,
    latest_event_id,
    record_from_row,
)

__all__ = [
    "CapacityFilter",
    "CapacityMatch",
    "RegistryFollower",
    "RegistryIndex",
    "matching_gpus",
]

log = logging.getLogger(__name__)

FIRST_BLOCK: Final = 64  # sort positions compared at first; a common query needs no more
BLOCK_GROWTH: Final = 8  # each further block this many times the last
GATHER_MIN: Final = 16  # candidates checked per GPU at a time, at least
READ_CHUNK: Final = 250  # registry rows converted per C call in a full read (~10 ms)
RELEASE_CHUNK: Final = 1000  # records freed per turn of the event loop after a full read
TICK_S: Final = 0.1  # how often the listening loops look at their stop flag
STOP_GRACE_S: Final = 2.0
TOP_GPUS: Final = 8  # per-agent free VRAM kept for the K largest usable GPUs
MEMO_ENTRIES: Final = 512  # distinct queries remembered between two changes of the index
MEMO_ROWS: Final = 100_000  # rows in their answers, at most
_NO_CODE: Final = -1
_MIXED: Final = -2
_BYTES_OF_ID: Final = 64
_COLUMNS: Final = (
    "_online",
    "_cores",
    "_mem",
    "_vram",
    "_sampled",
    "_pool",
    "_type",
    "_usable",
    "_free",
    "_rel",
    "_idkey",
    "_gpu_free",
)


def _gpu_sets() -> dict[int, tuple[int, ...]]:
    """A row of per-position matches (TOP_GPUS = 8 bools read as one uint64) -> positions."""
    rows = np.array(
        [[bits >> i & 1 for i in range(TOP_GPUS)] for bits in range(1 << TOP_GPUS)], dtype=bool
    )
    keys: list[int] = rows.view(np.uint64).ravel().tolist()
    return {
        key: tuple(i for i in range(TOP_GPUS) if bits >> i & 1) for bits, key in enumerate(keys)
    }


_GPU_SETS: Final = _gpu_sets()


class CapacityFilter(msgspec.Struct, frozen=True, kw_only=True):
    """What a scheduler asks for. GPU conditions apply per device (a job runs on one GPU)."""

    min_gpu_vram_gb: float = 0.0
    min_cpu_cores: int = 0
    min_mem_gb: float = 0.0
    min_gpu_count: int = 0
    gpu_type: str | None = None
    pool: str | None = None
    max_sample_age_s: float | None = None
    min_reliability: float | None = None
    limit: int = 100

    @property
    def gpus_needed(self) -> int:
        """How many GPUs must satisfy the per-GPU conditions (0: no GPU condition)."""
        wants_gpu = self.min_gpu_vram_gb > 0 or self.gpu_type is not None
        return max(self.min_gpu_count, 1 if wants_gpu else 0)


class CapacityMatch(msgspec.Struct, frozen=True):
    record: AgentRecord
    matching_gpus: tuple[int, ...]
    reliability_30d: float | None


def matching_gpus(record: AgentRecord, query: CapacityFilter) -> tuple[int, ...]:
    """Indexes of the GPUs that are capacity (no error) and satisfy the per-GPU conditions."""
    vram, kind = query.min_gpu_vram_gb, query.gpu_type
    if kind is None:  # a list comprehension, not a generator: this runs once per row returned
        return tuple([g.index for g in record.gpus if not g.error and g.vram_free_gb >= vram])
    return tuple(
        [g.index for g in record.gpus if not g.error and g.vram_free_gb >= vram and g.name == kind]
    )


def _id_key(agent_id: uuid.UUID) -> int:
    # PostgreSQL orders uuids bytewise, which the high 64 bits decide in practice.
    return agent_id.int >> _BYTES_OF_ID


class _Ordered:
    """The filter columns of some online agents, laid out in capacity order (contiguous, so
    a query compares plain arrays and a VRAM bound cuts the scan to a prefix)."""

    def __init__(
        self, index: RegistryIndex, slots: npt.NDArray[np.intp], key: npt.NDArray[np.float64]
    ) -> None:
        self.slots = slots
        self.negkey = -key[slots]
        self.cores = index._cores[slots]
        self.mem = index._mem[slots]
        self.pool = index._pool[slots]
        self.type = index._type[slots]
        self.usable = index._usable[slots]
        self.free = np.ascontiguousarray(index._free[slots].T)  # row k: the k-th best GPU
        self.sampled = index._sampled[slots]
        self.rel = index._rel[slots]
        self._kinds: dict[int, npt.NDArray[np.bool_]] = {}

    def __len__(self) -> int:
        return len(self.slots)

    def of_kind(self, kind: int) -> npt.NDArray[np.bool_]:
        """Agents with usable GPUs of this type only, or of several types (checked per GPU
        later); kept per type until the next change. Read-only."""
        found = self._kinds.get(kind)
        if found is None:
            found = self._kinds[kind] = (self.type == kind) | (self.type == _MIXED)
        return found


class _Memo:
    """Answers given since the index last changed: query -> (matches, asked at, oldest sample
    among them)."""

    __slots__ = ("answers", "rows", "version")

    def __init__(self, version: int) -> None:
        self.version = version
        self.rows = 0
        self.answers: dict[CapacityFilter, tuple[list[CapacityMatch], float, float]] = {}


class RegistryIndex:
    """Columns of the latest registry state, one slot per agent, plus the capacity order."""

    def __init__(self, initial_slots: int = 1024) -> None:
        self._reliability: dict[uuid.UUID, float] = {}
        self.version = 0
        self.as_of: datetime | None = None
        self._memo = _Memo(-1)
        self._reset(initial_slots)

    def _reset(self, slots: int) -> None:
        self._slots: dict[uuid.UUID, int] = {}
        self._records: list[AgentRecord | None] = []
        self._rel_of: list[float | None] = []  # by slot, for the rows returned
        # Slots whose GPUs the per-position columns cannot describe: more than TOP_GPUS,
        # or indexes that are not their positions. Their GPUs are checked row by row.
        self._irregular: set[int] = set()
        self._mixed: set[int] = set()  # slots with usable GPUs of several types
        self._pool_codes: dict[str, int] = {}
        self._type_codes: dict[str, int] = {}
        self._allocate(slots)
        self._online_order = _Ordered(self, np.empty(0, dtype=np.intp), self._vram)
        self._by_pool: dict[int, _Ordered] = {}
        self._order_stale = True
        self._best: tuple[int, float, int, float] = (0, 0.0, 0, -1.0)
        self._pairs: set[tuple[int, int]] = set()

    def _allocate(self, size: int) -> None:
        self._online = np.zeros(size, dtype=bool)
        self._cores = np.zeros(size, dtype=np.int64)
        self._mem = np.zeros(size, dtype=np.float64)
        self._vram = np.zeros(size, dtype=np.float64)
        self._sampled = np.full(size, -np.inf, dtype=np.float64)
        self._pool = np.full(size, _NO_CODE, dtype=np.int32)
        self._type = np.full(size, _NO_CODE, dtype=np.int32)
        self._usable = np.zeros(size, dtype=np.int32)
        self._free = np.full((size, TOP_GPUS), -1.0, dtype=np.float64)
        self._rel = np.full(size, np.nan, dtype=np.float64)
        self._idkey = np.zeros(size, dtype=np.uint64)
        # Each GPU by its position in the record, for the exact per-GPU check of candidates
        # (their types need no check: a candidate of a type query has GPUs of that type only,
        # or is mixed and checked row by row). An unusable or absent GPU has -inf free.
        self._gpu_free = np.full((size, TOP_GPUS), -np.inf, dtype=np.float64)

    def _grow(self, needed: int) -> None:
        size = len(self._online)
        if needed <= size:
            return
        new_size = max(needed, size * 2)
        old = {name: getattr(self, name) for name in _COLUMNS}
        self._allocate(new_size)
        for name, before in old.items():
            getattr(self, name)[:size] = before

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, agent_id: uuid.UUID) -> AgentRecord | None:
        slot = self._slots.get(agent_id)
        return None if slot is None else self._records[slot]

    def records(self) -> Iterator[AgentRecord]:
        return (r for r in self._records if r is not None)

    def updated_at(self, agent_id: uuid.UUID) -> datetime | None:
        record = self.get(agent_id)
        return None if record is None else record.updated_at

    def reliability(self, agent_id: uuid.UUID) -> float | None:
        return self._reliability.get(agent_id)

    @staticmethod
    def _code(codes: dict[str, int], name: str) -> int:
        code = codes.get(name)
        if code is None:
            code = codes[name] = len(codes)
        return code

    def apply(self, records: Iterable[AgentRecord]) -> int:
        """Insert or replace rows; returns how many changed (a row is newer when its
        ``updated_at``, then its ``status_changed_at``, is)."""
        changed: list[tuple[int, AgentRecord]] = []
        for record in records:
            slot = self._slots.get(record.agent_id)
            if slot is None:
                slot = len(self._records)
                self._slots[record.agent_id] = slot
                self._records.append(record)
                self._rel_of.append(None)
            else:
                old = self._records[slot]
                # A sweep changes status_changed_at but not updated_at.
                if old is not None and (old.updated_at, old.status_changed_at) >= (
                    record.updated_at,
                    record.status_changed_at,
                ):
                    continue
                self._records[slot] = record
            changed.append((slot, record))
        if not changed:
            return 0
        self._grow(len(self._records))
        slots = np.fromiter((s for s, _ in changed), dtype=np.intp, count=len(changed))
        rows = [r for _, r in changed]
        self._online[slots] = [r.status == "online" for r in rows]
        self._cores[slots] = [r.cpu_available_cores for r in rows]
        self._mem[slots] = [r.mem_available_gb for r in rows]
        self._vram[slots] = [r.gpu_vram_available_gb for r in rows]
        self._sampled[slots] = [
            r.last_sampled_at.timestamp() if r.last_sampled_at else -math.inf for r in rows
        ]
        self._pool[slots] = [self._code(self._pool_codes, r.pool_name) for r in rows]
        self._idkey[slots] = [_id_key(r.agent_id) for r in rows]
        rel_of, reliability = self._rel_of, self._reliability
        for slot, record in changed:
            rel_of[slot] = reliability.get(record.agent_id)
        self._rel[slots] = [math.nan if rel_of[s] is None else rel_of[s] for s, _ in changed]
        free = np.full((len(rows), TOP_GPUS), -1.0, dtype=np.float64)
        usable = np.zeros(len(rows), dtype=np.int32)
        types = np.full(len(rows), _NO_CODE, dtype=np.int32)
        gpu_free = np.full((len(rows), TOP_GPUS), -np.inf, dtype=np.float64)
        type_codes, irregular, mixed = self._type_codes, self._irregular, self._mixed
        for i, (slot, r) in enumerate(changed):
            good = [g for g in r.gpus if not g.error]
            usable[i] = len(good)
            best = sorted((g.vram_free_gb for g in good), reverse=True)[:TOP_GPUS]
            free[i, : len(best)] = best
            names = {g.name for g in good}
            for name in names:
                self._code(type_codes, name)
            mixed.discard(slot)
            if len(names) == 1:
                types[i] = type_codes[names.pop()]
            elif names:
                types[i] = _MIXED
                mixed.add(slot)
            gpus = r.gpus
            if len(gpus) > TOP_GPUS or any(g.index != k for k, g in enumerate(gpus)):
                irregular.add(slot)
                continue
            irregular.discard(slot)
            for k, g in enumerate(gpus):
                if not g.error:
                    gpu_free[i, k] = g.vram_free_gb
        self._free[slots] = free
        self._usable[slots] = usable
        self._type[slots] = types
        self._gpu_free[slots] = gpu_free
        self._order_stale = True
        self.version += 1
        return len(changed)

    def replace_all(self, records: Iterable[AgentRecord]) -> None:
        """Start over from a full read of the registry (drops agents no longer there)."""
        self._reset(max(1024, len(self._records)))
        self.apply(records)
        self.version += 1

    def adopt(self, other: RegistryIndex) -> list[AgentRecord | None]:
        """Take over everything ``other`` holds, at once (an index built elsewhere, in full);
        returns the records held before, for the caller to let go of when it suits."""
        held, version = self._records, max(self.version, other.version) + 1
        vars(self).update(vars(other))
        self.version = version
        return held

    def set_reliability(self, scores: Mapping[uuid.UUID, float]) -> None:
        self._reliability = dict(scores)
        self.version += 1
        self._rel[:] = np.nan
        self._rel_of = [None] * len(self._records)
        for agent_id, score in scores.items():
            slot = self._slots.get(agent_id)
            if slot is not None:
                self._rel[slot] = score
                self._rel_of[slot] = score
        if not self._order_stale:  # the order does not depend on reliability: no re-sort
            for ordered in (self._online_order, *self._by_pool.values()):
                ordered.rel = self._rel[ordered.slots]
            best = float(np.nanmax(self._online_order.rel, initial=-1.0))
            self._best = (*self._best[:3], best)

    def _ensure_order(self) -> None:
        """Sort once per change: the online agents in capacity order, all and by pool."""
        if not self._order_stale:
            return
        n = len(self._records)
        # Never below the best usable GPU, so "key >= v" is a superset of any VRAM match.
        key = np.maximum(self._vram[:n], self._free[:n, 0])
        order = np.lexsort((self._idkey[:n], -self._cores[:n], -key))  # last key is primary
        online = order[self._online[order]]
        everyone = self._online_order = _Ordered(self, online, key)
        pools = everyone.pool
        self._by_pool = {
            int(code): _Ordered(self, online[pools == code], key) for code in np.unique(pools)
        }
        # What the best online agent offers in each dimension: an impossible ask is empty at once.
        self._best = (
            int(everyone.cores.max(initial=0)),
            float(everyone.mem.max(initial=0.0)),
            int(everyone.usable.max(initial=0)),
            float(np.nanmax(everyone.rel, initial=-1.0)),
        )
        # (pool, GPU type) pairs present online: "this type in that pool" is often empty.
        self._pairs = set(zip(everyone.pool.tolist(), everyone.type.tolist(), strict=True))
        self._order_stale = False

    def query(self, query: CapacityFilter, now: float | None = None) -> list[CapacityMatch]:
        """Online agents satisfying ``query``, most free VRAM first, then most cores.

        The list is shared with later calls: read it, do not change it. A query asked again
        before the index changes is answered from a memo (schedulers repeat a few questions
        many times a second); one with ``max_sample_age_s`` only while every agent it returned
        is still fresh enough, and never for an earlier ``now``. Time passing alone only takes
        agents out of such an answer, so one that lost none is still exact.
        """
        clock = time.time() if now is None else now
        memo = self._memo
        if memo.version != self.version:
            memo = self._memo = _Memo(self.version)
        hit = memo.answers.get(query)
        if hit is not None:
            matches, asked_at, oldest = hit
            if query.max_sample_age_s is None or (
                clock >= asked_at and oldest >= clock - query.max_sample_age_s
            ):
                return matches
        matches = self._search(query, clock)
        if len(memo.answers) >= MEMO_ENTRIES or memo.rows + len(matches) > MEMO_ROWS:
            memo.answers.clear()
            memo.rows = 0
        memo.rows += len(matches)
        oldest = math.inf
        if query.max_sample_age_s is not None and matches:
            sampled = self._sampled
            oldest = min(float(sampled[self._slots[m.record.agent_id]]) for m in matches)
        memo.answers[query] = (matches, clock, oldest)
        return matches

    def _search(self, query: CapacityFilter, clock: float) -> list[CapacityMatch]:
        if query.limit <= 0:
            return []
        pool = kind = 0
        if query.pool is not None:
            pool = self._pool_codes.get(query.pool, _NO_CODE)
            if pool == _NO_CODE:
                return []
        if query.gpu_type is not None:
            kind = self._type_codes.get(query.gpu_type, _NO_CODE)
            if kind == _NO_CODE:
                return []
        self._ensure_order()
        need = query.gpus_needed
        best_cores, best_mem, best_gpus, best_reliability = self._best
        if (
            query.min_cpu_cores > best_cores
            or query.min_mem_gb > best_mem
            or need > best_gpus
            or (query.min_reliability is not None and query.min_reliability > best_reliability)
            or (
                query.pool is not None
                and query.gpu_type is not None
                and (pool, kind) not in self._pairs
                and (pool, _MIXED) not in self._pairs
            )
        ):
            return []
        cols = self._online_order if query.pool is None else self._by_pool.get(pool)
        if cols is None:  # the pool has no online agent
            return []
        hi = len(cols)
        if need > 0 and query.min_gpu_vram_gb > 0:
            # sorted by VRAM descending: agents past this point cannot have it on any GPU
            hi = int(cols.negkey.searchsorted(-query.min_gpu_vram_gb, side="right"))
        found: list[CapacityMatch] = []
        limit = query.limit
        # Blocks in sort order, growing: a common query is answered from the first block,
        # one that matches little still costs only a few vectorised passes over the prefix.
        # Hits wait until there are enough for what is still wanted, then are checked per GPU
        # together (the mask is exact but for mixed GPU types and irregular slots).
        lo, block = 0, 2 * limit if limit > FIRST_BLOCK // 2 else FIRST_BLOCK
        pending: list[npt.NDArray[np.intp]] = []
        held = seen = 0
        while lo < hi:
            up = lo + block if lo + block < hi else hi
            mask = self._mask(cols, query, need, kind, clock, lo, up)
            hits = cols.slots[lo:up] if mask is None else cols.slots[lo:up][mask]
            lo = up
            if len(hits):
                pending.append(hits)
                held += len(hits)
                seen += len(hits)
            if pending and (held >= limit - len(found) or lo >= hi):
                candidates = pending[0] if len(pending) == 1 else np.concatenate(pending)
                pending, held = [], 0
                start, end = 0, len(candidates)
                while start < end:
                    step = 2 * (limit - len(found))
                    step = step if step > GATHER_MIN else GATHER_MIN
                    whole = start == 0 and step >= end
                    chunk = candidates if whole else candidates[start : start + step]
                    if self._collect(chunk, query, need, found):
                        return found
                    start += step
            # Enough for what is still wanted at the rate seen so far, with a margin.
            wanted = limit - len(found) - held
            block = max(block * BLOCK_GROWTH, wanted * lo * 3 // (2 * seen or 2))
        return found

    def _mask(
        self,
        cols: _Ordered,
        query: CapacityFilter,
        need: int,
        kind: int,
        clock: float,
        lo: int,
        up: int,
    ) -> npt.NDArray[np.bool_] | None:
        """Which positions in [lo, up) may match (a superset where GPUs decide); None: all."""
        conditions: list[npt.NDArray[np.bool_]] = []
        if query.min_cpu_cores > 0:
            conditions.append(cols.cores[lo:up] >= query.min_cpu_cores)
        if query.min_mem_gb > 0:
            conditions.append(cols.mem[lo:up] >= query.min_mem_gb)
        if query.gpu_type is not None:
            conditions.append(cols.of_kind(kind)[lo:up])
        # One GPU of a type, any free VRAM: the type condition already says so.
        vram = query.min_gpu_vram_gb
        if need > 0 and not (need == 1 and query.gpu_type is not None and vram <= 0):
            conditions.append(cols.free[min(need, TOP_GPUS) - 1, lo:up] >= vram)
            if need > TOP_GPUS:
                conditions.append(cols.usable[lo:up] >= need)
        if query.max_sample_age_s is not None:
            conditions.append(cols.sampled[lo:up] >= clock - query.max_sample_age_s)
        if query.min_reliability is not None:
            conditions.append(cols.rel[lo:up] >= query.min_reliability)
        if len(conditions) <= 1:
            return conditions[0] if conditions else None
        mask = conditions[0] & conditions[1]  # a new array: the cached type masks stay intact
        for condition in conditions[2:]:
            mask &= condition
        return mask

    def _collect(
        self,
        slots: npt.NDArray[np.intp],
        query: CapacityFilter,
        need: int,
        found: list[CapacityMatch],
    ) -> bool:
        """Check candidates GPU by GPU, in order, into ``found``; True once it holds ``limit``."""
        ok = self._gpu_free[slots] >= query.min_gpu_vram_gb
        rows: list[int] = ok.view(np.uint64).ravel().tolist()  # a row of 8 bools as one int
        records, rel_of, irregular, limit = (
            self._records,
            self._rel_of,
            self._irregular,
            query.limit,
        )
        mixed: Container[int] = self._mixed if query.gpu_type is not None else ()
        for slot, row in zip(slots.tolist(), rows, strict=True):
            record = records[slot]
            if record is None:  # pragma: no cover - a removed slot is never online
                continue
            if slot in irregular or slot in mixed:
                gpus = matching_gpus(record, query)
            else:
                gpus = _GPU_SETS[row]
            if len(gpus) < need:
                continue  # mixed GPU types, or GPUs the column of the k-th best cannot tell
            found.append(CapacityMatch(record, gpus, rel_of[slot]))
            if len(found) >= limit:
                return True
        return False


class RegistryFollower:
    """Keeps a :class:`RegistryIndex` fresh from the database (LISTEN/NOTIFY, then rows by
    ``updated_at`` and the agents of new ``silence`` events)."""

    def __init__(
        self,
        db: Database,
        index: RegistryIndex,
        *,
        refresh_interval_s: float = 1.0,
        poll_interval_s: float = 5.0,
        resync_interval_s: float = 300.0,
        reliability_interval_s: float = 60.0,
        overlap_s: float = 2.0,
        retry_max_s: float = 10.0,
    ) -> None:
        self.db = db
        self.index = index
        self.refresh_interval_s = refresh_interval_s
        self.poll_interval_s = poll_interval_s
        self.resync_interval_s = resync_interval_s
        self.reliability_interval_s = reliability_interval_s
        self.overlap = timedelta(seconds=overlap_s)
        self.retry_max_s = retry_max_s
        self.refreshes = 0
        self.last_refresh_s = 0.0
        self._watermark: datetime | None = None
        self._silence_id = 0  # the last silence event read
        self._last_full = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._refresh_lock = asyncio.Lock()
        self._stop = asyncio.Event()

    async def refresh(self, *, full: bool = False) -> int:
        """Read what changed (everything if ``full``) into the index; returns rows changed."""
        async with self._refresh_lock:
            started = time.perf_counter()
            if full or self._watermark is None:
                # Decoding and indexing every row takes seconds at 100k agents: done in a
                # worker thread into a fresh index, which replaces the served one whole;
                # requests are answered from the old one meanwhile.
                scores = self.index._reliability
                fresh, db_now, self._silence_id = await asyncio.to_thread(self._read_all, scores)
                latest = self.index._reliability
                before = self.index.adopt(fresh)
                if latest is not scores:  # pragma: no cover - rescored while the thread read
                    self.index.set_reliability(latest)
                changed = len(fresh)
                self._last_full = time.monotonic()
                while before:  # 100k records freed at once would hold the loop ~0.1 s
                    del before[-RELEASE_CHUNK:]
                    await asyncio.sleep(0)
            else:
                async with self.db.connection() as conn:
                    db_now = await _db_now(conn)
                    rows = await fetch_registry(
                        conn, updated_after=self._watermark, known=self.index.updated_at
                    )
                    self._silence_id, silenced = await fetch_silenced(
                        conn, after_id=self._silence_id
                    )
                    changed = self.index.apply(rows + silenced)
            # Rows carry their transaction's start time: a transaction that began before
            # this read but commits after it must still be seen next time, so the next read
            # starts ``overlap`` before this one (rows already held are skipped undecoded).
            self._watermark = db_now - self.overlap
            self.index.as_of = db_now
            self.refreshes += 1
            self.last_refresh_s = time.perf_counter() - started
            return changed

    def _read_all(self, scores: Mapping[uuid.UUID, float]) -> tuple[RegistryIndex, datetime, int]:
        """(In a worker thread, on its own connection.) The whole registry, indexed and sorted,
        the database's clock and the last event id, both read before it."""

        async def read() -> tuple[list[AgentRecord], datetime, int]:
            conn = await connect(self.db.url, timeout_s=self.db.settings.connect_timeout_s)
            async with conn:
                db_now = await _db_now(conn)  # before the read: the watermark must not pass it
                events = await latest_event_id(conn)  # so must the silence events
                # fetch_registry's fetchall converts every row in one C call that holds the
                # GIL (2.5 s at 100k agents); in chunks, the event loop gets a turn between.
                cur = await conn.execute(f"SELECT {REGISTRY_COLUMNS} FROM agent_registry")
                records: list[AgentRecord] = []
                while rows := await cur.fetchmany(READ_CHUNK):
                    records += [record_from_row(row) for row in rows]
                return records, db_now, events

        rows, db_now, events = asyncio.run(read())
        fresh = RegistryIndex(initial_slots=max(1024, len(rows)))
        fresh.set_reliability(scores)
        fresh.apply(rows)
        fresh._ensure_order()
        return fresh, db_now, events

    async def refresh_reliability(self) -> None:
        async with self.db.connection() as conn:
            scores = await fetch_reliability(conn, now=datetime.now().astimezone())
        self.index.set_reliability(scores)

    async def __aenter__(self) -> Self:
        await self.refresh(full=True)
        await self.refresh_reliability()
        self._stop = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._follow(), name="registry-follower"),
            asyncio.create_task(self._reliability_loop(), name="registry-reliability"),
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await stop_tasks(self._stop, self._tasks)
        self._tasks = []

    def request_stop(self) -> None:
        """Ask the loops to finish (``__aexit__`` then waits less)."""
        self._stop.set()

    async def _pause(self, seconds: float) -> bool:
        """Sleep unless stopping; True when it is time to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    async def _follow(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                conn = await connect(self.db.url, timeout_s=self.db.settings.connect_timeout_s)
                async with conn:
                    await conn.execute("LISTEN fleetpulse_registry")
                    await self.refresh()  # what changed while nobody listened
                    attempt = 0
                    await self._listen(conn)
            except (FleetpulseError, *RETRYABLE_DB_ERRORS, psycopg.Error) as exc:
                log.warning("registry follower: %s; retrying", exc)
                if await self._pause(random.uniform(0, min(self.retry_max_s, 0.2 * 2**attempt))):
                    return
                attempt += 1

    async def _listen(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        next_allowed = last_read = time.monotonic()
        while not self._stop.is_set():
            notified = False
            # Short waits, never cancelled: a notifies() cancelled mid-wait can hang psycopg.
            async for _ in conn.notifies(timeout=TICK_S, stop_after=1):
                notified = True
            if not notified and time.monotonic() - last_read < self.poll_interval_s:
                continue
            wait = next_allowed - time.monotonic()
            if wait > 0 and await self._pause(wait):  # coalesce a burst of writes
                return
            full = time.monotonic() - self._last_full >= self.resync_interval_s
            await self.refresh(full=full)
            last_read = time.monotonic()
            next_allowed = last_read + self.refresh_interval_s

    async def _reliability_loop(self) -> None:
        while not await self._pause(self.reliability_interval_s):
            try:
                await self.refresh_reliability()
            except FleetpulseError as exc:
                log.warning("reliability refresh failed: %s", exc)


async def _db_now(conn: psycopg.AsyncConnection[TupleRow]) -> datetime:
    cur = await conn.execute("SELECT now()")
    row = await cur.fetchone()
    db_now: datetime = row[0] if row else datetime.now().astimezone()
    return db_now


async def stop_tasks(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    """Ask background loops to finish, give them a moment, then cancel what is left."""
    stop.set()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=STOP_GRACE_S)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("%s ended with %r", task.get_name(), task.exception())
