"""Capacity answers in claimable figures: the registry index's answer, corrected for claims.

Claimable ≤ observed for every figure (it is a minimum), so an agent that matches a query on
claimable figures also matches it on observed ones: the index's answer (observed figures,
observed order) is a superset, and only the rows of agents holding claims or cordons need a
second look. Those are checked on their claimable figures (dropped when they no longer
match, or are cordoned) and the answer re-sorted by claimable VRAM, then cores. Every agent
the index did not return ranks below each row of it that holds nothing, and below each held
row whose claimable key is above the last row's observed key; when fewer than ``limit`` rows
are certain that way, the index is asked for more. The index is never re-sorted for a claim,
so a claim costs no sort of the fleet.

With nothing held the index's answer is returned as it is (the same list, byte-identical
rows). Answers are remembered until the index, the holdings or the next claim expiry moves.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Final

import msgspec

from fleetpulse.gpus import is_usable
from fleetpulse.store.allotment import Allotment, Holding, allot
from fleetpulse.store.capacity import CapacityFilter, CapacityMatch
from fleetpulse.store.holdings import Holdings
from fleetpulse.store.queries import AgentRecord
from fleetpulse.store.registry_index import RegistryIndex

__all__ = ["ClaimableView", "claimable_gpus"]

GROWTH: Final = 4  # how much more of the index's answer to ask for when rows are uncertain
MEMO_ENTRIES: Final = 256
MAX_ROWS: Final = 1_000_000
VERDICTS_PER_QUERY: Final = 100_000
_Row = tuple[float, int, int, bool, CapacityMatch]
_Verdict = tuple[AgentRecord, Holding, float, _Row | None, float | None]


def claimable_gpus(
    record: AgentRecord, allotment: Allotment, query: CapacityFilter
) -> tuple[int, ...]:
    """Indexes of the GPUs that satisfy the per-GPU conditions on claimable VRAM (cordoned
    and failed GPUs have none)."""
    vram, kind = query.min_gpu_vram_gb, query.gpu_type
    return tuple(
        [
            g.index
            for g, a in zip(record.gpus, allotment.gpus, strict=True)
            if is_usable(g)
            and a.cordon is None
            and a.vram_claimable_gb >= vram
            and (kind is None or g.name == kind)
        ]
    )


def _observed_key(record: AgentRecord) -> float:
    """The index's sort key: free VRAM, never below the best usable GPU's."""
    key = record.gpu_vram_available_gb
    for g in record.gpus:
        if g.vram_free_gb > key and is_usable(g):
            key = g.vram_free_gb
    return key


class ClaimableView:
    """Claimable capacity answers over a registry index and the holdings of this process."""

    def __init__(self, holdings: Holdings, *, trail_s: float = 0.0) -> None:
        """``trail_s``: how long an answer may be served after a claim in it expired (the
        index trails the registry the same way), so expiries spread over time do not make
        every request compute its answer afresh."""
        self.holdings = holdings
        self.trail_s = trail_s
        # agent -> (record, holding, allotment, valid until (s since epoch))
        self._allotments: dict[uuid.UUID, tuple[AgentRecord, Holding, Allotment, float]] = {}
        self._memo: dict[CapacityFilter, tuple[tuple[int, int, int], float, list[CapacityMatch]]]
        self._memo = {}
        self._keys: dict[int, tuple[AgentRecord, float]] = {}  # id(record) -> its sort key
        # question (limit 0) -> agent -> (record, holding, valid until, row or None, reliability)
        self._verdicts: dict[CapacityFilter, dict[uuid.UUID, _Verdict]] = {}

    def allotment(self, record: AgentRecord, now: float) -> Allotment | None:
        """The agent's claimable figures; None when nothing is held on it (then they are the
        observed ones)."""
        holding = self.holdings.get(record.agent_id)
        if holding.empty:
            return None
        cached = self._allotments.get(record.agent_id)
        if cached is not None and cached[0] is record and cached[1] is holding and now < cached[3]:
            return cached[2]
        moment = datetime.fromtimestamp(now, UTC)
        allotment = allot(record, holding, moment)
        expiry = holding.next_expiry(after=moment)
        valid = math.inf if expiry is None else expiry.timestamp()
        if len(self._allotments) > 4 * len(self.holdings) + 1024:
            self._allotments.clear()  # agents that no longer hold anything
        self._allotments[record.agent_id] = (record, holding, allotment, valid)
        return allotment

    def query(self, index: RegistryIndex, query: CapacityFilter, now: float) -> list[CapacityMatch]:
        """Agents satisfying ``query`` on claimable figures, most claimable VRAM first, then
        most claimable cores, then agent_id. The list is shared: read it, do not change it."""
        if not len(self.holdings):
            return index.query(query, now)
        version = (id(index), index.version, self.holdings.version)
        hit = self._memo.get(query)
        if hit is not None and hit[0] == version and now < hit[1]:
            return hit[2]
        answer, _ = self._search(index, query, now)
        # Until a claim anywhere expires (an agent further down may then rank higher), or
        # ``trail_s`` later; an age bound makes the answer one of this moment only.
        expiry = max(self.holdings.next_expiry_ts(now), now + self.trail_s)
        valid = expiry if query.max_sample_age_s is None else now
        if len(self._memo) >= MEMO_ENTRIES:
            self._memo.clear()
        self._memo[query] = (version, valid, answer)
        return answer

    def _search(
        self, index: RegistryIndex, query: CapacityFilter, now: float
    ) -> tuple[list[CapacityMatch], float]:
        limit = query.limit
        asked = limit
        valid = math.inf
        # A held row's verdict for this question, kept while its record and holding are the
        # same objects: a claim changes one agent, the rows walked past are the others.
        base = msgspec.structs.replace(query, limit=0)
        verdicts = self._verdicts.get(base)
        if verdicts is None or len(verdicts) > VERDICTS_PER_QUERY:
            if len(self._verdicts) >= MEMO_ENTRIES:
                self._verdicts.clear()
            verdicts = self._verdicts[base] = {}
        while True:
            raw = index.query(msgspec.structs.replace(query, limit=asked), now)
            kept: list[tuple[float, int, int, bool, CapacityMatch]] = []
            reordered = False
            for match in raw:
                record = match.record
                holding = self.holdings.get(record.agent_id)
                if holding.empty:
                    kept.append((0.0, 0, 0, True, match))
                    continue
                reordered = True
                seen = verdicts.get(record.agent_id)
                if (
                    seen is not None
                    and seen[0] is record
                    and seen[1] is holding
                    and now < seen[2]
                    and seen[4] == match.reliability_30d
                ):
                    verdict = seen[3]
                    valid = min(valid, seen[2])
                else:
                    verdict, until = self._verdict(match, query, now)
                    verdicts[record.agent_id] = (
                        record,
                        holding,
                        until,
                        verdict,
                        match.reliability_30d,
                    )
                    valid = min(valid, until)
                if verdict is not None:
                    kept.append(verdict)
            exhausted = len(raw) < asked
            if not reordered:
                return raw[:limit] if len(raw) > limit else raw, valid
            answer = self._order(kept, raw[-1] if raw and not exhausted else None, limit)
            if answer is not None:
                return answer, valid
            if exhausted or asked >= MAX_ROWS:  # pragma: no cover - exhausted returns above
                return [k[4] for k in kept][:limit], valid
            asked *= GROWTH

    def _verdict(
        self, match: CapacityMatch, query: CapacityFilter, now: float
    ) -> tuple[tuple[float, int, int, bool, CapacityMatch] | None, float]:
        """A held agent's row on its claimable figures (None: it no longer matches), and
        until when that holds."""
        record = match.record
        allotment = self.allotment(record, now)
        cached = self._allotments.get(record.agent_id)
        until = cached[3] if cached is not None else now
        if allotment is None:  # pragma: no cover - only asked for agents holding something
            return (0.0, 0, 0, True, match), until
        gpus = claimable_gpus(record, allotment, query)
        if (
            not allotment.schedulable
            or len(gpus) < query.gpus_needed
            or allotment.cpu_claimable_cores < query.min_cpu_cores
            or allotment.mem_claimable_gb < query.min_mem_gb
        ):
            return None, until
        row = CapacityMatch(record, gpus, match.reliability_30d, allotment)
        return (
            allotment.gpu_vram_claimable_gb,
            allotment.cpu_claimable_cores,
            1,
            False,
            row,
        ), until

    def _key(self, record: AgentRecord) -> float:
        cached = self._keys.get(id(record))
        if cached is not None and cached[0] is record:
            return cached[1]
        key = _observed_key(record)
        if len(self._keys) >= 200_000:
            self._keys.clear()
        self._keys[id(record)] = (record, key)
        return key

    def _order(
        self,
        kept: list[tuple[float, int, int, bool, CapacityMatch]],
        last: CapacityMatch | None,
        limit: int,
    ) -> list[CapacityMatch] | None:
        """The first ``limit`` rows in claimable order if they are certain (None: ask the
        index for more). ``last``: the index's last row, None when it had no more."""
        rows: list[tuple[float, int, int, CapacityMatch, bool]] = []
        for key, cores, _, plain, match in kept:
            record = match.record
            if plain:  # observed = claimable: the index's own key
                key, cores = self._key(record), record.cpu_available_cores
            rows.append((-key, -cores, record.agent_id.int >> 64, match, plain))
        rows.sort(key=lambda r: (r[0], r[1], r[2]))
        if last is None:
            return [r[3] for r in rows[:limit]]
        bound = (self._key(last.record), last.record.cpu_available_cores)
        certain: list[CapacityMatch] = []
        for neg_key, neg_cores, _, match, plain in rows:
            if not plain and not (-neg_key, -neg_cores) > bound:
                break
            certain.append(match)
            if len(certain) >= limit:
                return certain
        return None
