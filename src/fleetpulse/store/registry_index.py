"""An in-process index of the registry that answers capacity queries in well under a millisecond.

Why: at 100k agents a selective or empty capacity filter makes PostgreSQL scan the registry
(20–35 ms; 160–200 ms at 1M) and per-request SQL caps the API far below its framework ceiling.
The index keeps one column per filterable quantity (numpy, one slot per agent) and, per
change, the online agents laid out in the sort order (free VRAM desc, available cores desc,
agent_id), all of them and each pool apart. A query compares a prefix of those columns in
blocks that start small (a common query needs one block of ~64) and grow with how rarely
rows match, then checks its candidates GPU by GPU in one vectorised step; Python touches only
the rows returned.

:class:`RegistryIndex` is pure (no I/O); the question it answers is in
:mod:`fleetpulse.store.capacity`, and :mod:`fleetpulse.store.registry_follower` keeps one
fresh from the database.

Longer than most modules on purpose: the columns, their capacity order and the blocked
search over them are one data structure, and each part reads the others' private arrays
in its hot loop.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Container, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Final, Self

import numpy as np
import numpy.typing as npt

from fleetpulse.gpus import usable_gpus
from fleetpulse.store.capacity import CapacityFilter, CapacityMatch, matching_gpus
from fleetpulse.store.queries import AgentRecord

__all__ = ["RegistryIndex"]

FIRST_BLOCK: Final = 64  # sort positions compared at first; a common query needs no more
BLOCK_GROWTH: Final = 8  # each further block this many times the last
GATHER_MIN: Final = 16  # candidates checked per GPU at a time, at least
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
        # capacity: online and offered by its owner (presence); a withheld agent is neither
        self._online[slots] = [r.status == "online" and r.offered for r in rows]
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
            good = usable_gpus(r.gpus)
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
            for g in good:  # regular: each GPU's index is its position
                gpu_free[i, g.index] = g.vram_free_gb
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

    @classmethod
    def from_records(
        cls, records: list[AgentRecord], *, reliability: Mapping[uuid.UUID, float]
    ) -> Self:
        """An index of ``records`` with their reliability scores, sorted and ready to
        answer (the whole registry read at once, built away from the event loop)."""
        index = cls(initial_slots=max(1024, len(records)))
        index.set_reliability(reliability)
        index.apply(records)
        index._ensure_order()
        return index

    def release(self) -> list[AgentRecord | None]:
        """Empty this index (one no longer served) and hand back the records it held, for
        the caller to let go of when it suits."""
        held = self._records
        self._reset(1)
        self.version += 1
        return held

    @property
    def reliability_scores(self) -> Mapping[uuid.UUID, float]:
        """The scores last set (the same object until :meth:`set_reliability` is called)."""
        return self._reliability

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
        matches = self._scan(query, clock) if query.include_degraded else self._search(query, clock)
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

    def _scan(self, query: CapacityFilter, clock: float) -> list[CapacityMatch]:
        """Every online, offered agent checked in Python against ``query`` (degraded GPUs
        included), in capacity order by the VRAM those GPUs offer: slower than
        :meth:`_search`, for the rarer question that accepts degraded GPUs."""
        if query.limit <= 0:
            return []
        self._ensure_order()
        need = query.gpus_needed
        oldest = -math.inf if query.max_sample_age_s is None else clock - query.max_sample_age_s
        ranked: list[tuple[float, int, int, CapacityMatch]] = []
        for slot in self._online_order.slots.tolist():
            record = self._records[slot]
            if record is None:  # pragma: no cover - a removed slot is never online
                continue
            reliability = self._rel_of[slot]
            sampled = record.last_sampled_at
            if (
                (query.pool is not None and record.pool_name != query.pool)
                or record.cpu_available_cores < query.min_cpu_cores
                or record.mem_available_gb < query.min_mem_gb
                or (sampled.timestamp() if sampled else -math.inf) < oldest
                or (
                    query.min_reliability is not None
                    and (reliability is None or reliability < query.min_reliability)
                )
            ):
                continue
            gpus = matching_gpus(record, query)
            if len(gpus) < need:
                continue
            usable = usable_gpus(record.gpus, include_degraded=True)
            vram = max((g.vram_free_gb for g in usable), default=0.0)
            key = (-max(vram, record.gpu_vram_available_gb), -record.cpu_available_cores)
            ranked.append(
                (*key, _id_key(record.agent_id), CapacityMatch(record, gpus, reliability))
            )
        ranked.sort(key=lambda row: row[:3])
        return [row[3] for row in ranked[: query.limit]]

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
