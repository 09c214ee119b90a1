"""What claims and cordons leave of an agent's capacity: pure arithmetic, no I/O.

For each GPU, claimable VRAM = min(observed free VRAM, total VRAM − VRAM held by active claims
on that GPU); cores and memory likewise. The minimum never counts a running job twice (once
its job runs, the observed figure already shows it and the minimum picks that) and still
protects a claim whose job has not started. A claim past ``expires_at`` holds nothing, so
correctness needs no sweeper. A cordoned agent, a cordoned GPU and a GPU reporting an error
offer nothing new; claims already on them keep holding until released or expired.

The same functions decide a claim inside the database transaction (:func:`fit`) and shape
what the capacity index filters and sorts on (:func:`allot`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final

import msgspec

from fleetpulse.gpus import is_usable

if TYPE_CHECKING:
    from fleetpulse.store.queries import AgentRecord

__all__ = [
    "EPSILON",
    "Allotment",
    "ClaimAsk",
    "ClaimRecord",
    "ClaimedGpu",
    "CordonRecord",
    "GpuAllotment",
    "Holding",
    "Refusal",
    "allot",
    "fit",
]

EPSILON: Final = 1e-9  # float sums of GiB: a claim of exactly what is left still fits


class ClaimedGpu(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    index: int
    uuid: str
    vram_gb: float


class ClaimRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One claim as stored (active or not: :meth:`active_at` says)."""

    claim_id: uuid.UUID
    agent_id: uuid.UUID
    holder: str
    gpus: tuple[ClaimedGpu, ...]
    cpu_cores: int
    mem_gb: float
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None = None
    end_reason: str | None = None

    def active_at(self, now: datetime) -> bool:
        return self.ended_at is None and self.expires_at > now


class CordonRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An agent (``gpu_uuid`` None) or one GPU taken out of the offer."""

    agent_id: uuid.UUID
    gpu_uuid: str | None
    reason: str
    by: str
    at: datetime


class Holding(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What is held on one agent: its claims (expired ones hold nothing) and its cordons."""

    claims: tuple[ClaimRecord, ...] = ()
    cordon: CordonRecord | None = None
    gpu_cordons: tuple[CordonRecord, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.claims and self.cordon is None and not self.gpu_cordons

    def next_expiry(self, after: datetime | None = None) -> datetime | None:
        """When the first of its claims (expiring after ``after``) expires: then the figures
        change by themselves."""
        times = [
            c.expires_at
            for c in self.claims
            if c.ended_at is None and (after is None or c.expires_at > after)
        ]
        return min(times) if times else None


class GpuAllotment(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    index: int
    uuid: str
    vram_held_gb: float
    vram_claimable_gb: float  # 0 when the GPU is cordoned or reports an error
    cordon: CordonRecord | None = None


class Allotment(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An agent's figures once claims and cordons are counted (observed ones stay on the
    record). ``gpus`` follows the record's GPUs, in the same order."""

    claims: int
    cpu_held_cores: int
    cpu_claimable_cores: int
    mem_held_gb: float
    mem_claimable_gb: float
    gpu_vram_claimable_gb: float  # the largest claimable VRAM on one usable GPU
    gpus: tuple[GpuAllotment, ...]
    cordon: CordonRecord | None = None

    @property
    def schedulable(self) -> bool:
        return self.cordon is None


class ClaimAsk(msgspec.Struct, frozen=True, kw_only=True):
    """What a claim asks for on one agent. ``gpus``: uuids or indexes chosen by the caller;
    otherwise the first ``gpu_count`` usable GPUs (index order) that have ``vram_gb``
    claimable and, with ``gpu_type``, are of that type."""

    vram_gb: float = 0.0
    gpu_count: int = 0
    cpu_cores: int = 0
    mem_gb: float = 0.0
    gpus: tuple[str | int, ...] | None = None
    gpu_type: str | None = None


class Refusal(msgspec.Struct, frozen=True):
    """Why a claim does not fit (the text goes into a 409's ``detail``)."""

    reason: str


def _round(value: float) -> float:
    return round(value, 6)


def allot(record: AgentRecord, holding: Holding, now: datetime) -> Allotment:
    """The claimable figures of ``record`` given what ``holding`` holds at ``now``."""
    active = [c for c in holding.claims if c.active_at(now)]
    held_by_uuid: dict[str, float] = {}
    held_by_index: dict[int, float] = {}
    cores = 0
    mem = 0.0
    for claim in active:
        cores += claim.cpu_cores
        mem += claim.mem_gb
        for c in claim.gpus:
            if c.uuid:
                held_by_uuid[c.uuid] = held_by_uuid.get(c.uuid, 0.0) + c.vram_gb
            else:
                held_by_index[c.index] = held_by_index.get(c.index, 0.0) + c.vram_gb
    cordons = {c.gpu_uuid: c for c in holding.gpu_cordons}
    gpus: list[GpuAllotment] = []
    best = 0.0
    for g in record.gpus:
        held = held_by_uuid.get(g.uuid, 0.0) if g.uuid else held_by_index.get(g.index, 0.0)
        cordon = cordons.get(g.uuid) if g.uuid else None
        claimable = 0.0
        if is_usable(g) and cordon is None:
            claimable = max(0.0, min(g.vram_free_gb, g.vram_total_gb - held))
            best = max(best, claimable)
        gpus.append(
            GpuAllotment(
                index=g.index,
                uuid=g.uuid,
                vram_held_gb=_round(held),
                vram_claimable_gb=_round(claimable),
                cordon=cordon,
            )
        )
    return Allotment(
        claims=len(active),
        cpu_held_cores=cores,
        cpu_claimable_cores=max(0, min(record.cpu_available_cores, record.cpu_cores - cores)),
        mem_held_gb=_round(mem),
        mem_claimable_gb=_round(max(0.0, min(record.mem_available_gb, record.mem_total_gb - mem))),
        gpu_vram_claimable_gb=_round(best),
        gpus=tuple(gpus),
        cordon=holding.cordon,
    )


def _usable(record: AgentRecord, allotment: Allotment, k: int) -> bool:
    return is_usable(record.gpus[k]) and allotment.gpus[k].cordon is None


def _chosen(
    record: AgentRecord, allotment: Allotment, wanted: Sequence[str | int]
) -> list[int] | Refusal:
    """Positions of the GPUs named by uuid or index."""
    positions: list[int] = []
    for selector in wanted:
        if isinstance(selector, int):
            found = [k for k, g in enumerate(record.gpus) if g.index == selector]
        else:
            found = [k for k, g in enumerate(record.gpus) if g.uuid == selector]
        if not found:
            return Refusal(f"agent {record.agent_id} has no GPU {selector!r}")
        if found[0] in positions:
            return Refusal(f"GPU {selector!r} is named twice")
        positions.append(found[0])
    return positions


def fit(
    record: AgentRecord,
    holding: Holding,
    ask: ClaimAsk,
    now: datetime,
    allotment: Allotment | None = None,
) -> tuple[ClaimedGpu, ...] | Refusal:
    """The GPUs (with the VRAM held on each) a claim of ``ask`` takes on this agent now, or
    why it cannot be had. ``allotment``: ``allot(record, holding, now)`` if already known."""
    if record.status != "online":
        return Refusal(f"agent {record.agent_id} is {record.status}")
    if not record.offered:
        return Refusal(
            f"agent {record.agent_id} is withheld by its owner ({record.withheld_reason})"
        )
    if holding.cordon is not None:
        c = holding.cordon
        return Refusal(f"agent {record.agent_id} is cordoned by {c.by}: {c.reason}")
    if allotment is None:
        allotment = allot(record, holding, now)
    if ask.cpu_cores > allotment.cpu_claimable_cores:
        return Refusal(
            f"{ask.cpu_cores} cores asked, {allotment.cpu_claimable_cores} claimable"
            f" on agent {record.agent_id}"
        )
    if ask.mem_gb > allotment.mem_claimable_gb + EPSILON:
        return Refusal(
            f"{ask.mem_gb:g} GiB of memory asked, {allotment.mem_claimable_gb:g} claimable"
            f" on agent {record.agent_id}"
        )
    if ask.gpus is not None:
        positions = _chosen(record, allotment, ask.gpus)
        if isinstance(positions, Refusal):
            return positions
        for k in positions:
            g, a = record.gpus[k], allotment.gpus[k]
            if a.cordon is not None:
                return Refusal(f"GPU {g.uuid or g.index} is cordoned by {a.cordon.by}")
            if g.error:
                return Refusal(f"GPU {g.uuid or g.index} reports an error: {g.error}")
            if not is_usable(g):
                reasons = ", ".join(g.health_reasons) or "no reason given"
                return Refusal(f"GPU {g.uuid or g.index} is {g.health} ({reasons})")
            if ask.vram_gb > a.vram_claimable_gb + EPSILON:
                return Refusal(
                    f"{ask.vram_gb:g} GiB asked on GPU {g.uuid or g.index},"
                    f" {a.vram_claimable_gb:g} claimable"
                )
    else:
        positions = [
            k
            for k, g in enumerate(record.gpus)
            if _usable(record, allotment, k)
            and allotment.gpus[k].vram_claimable_gb + EPSILON >= ask.vram_gb
            and (ask.gpu_type is None or g.name == ask.gpu_type)
        ][: ask.gpu_count]
        if len(positions) < ask.gpu_count:
            return Refusal(
                f"{ask.gpu_count} GPU(s) with {ask.vram_gb:g} GiB claimable asked,"
                f" {len(positions)} on agent {record.agent_id} (most claimable on one GPU:"
                f" {allotment.gpu_vram_claimable_gb:g} GiB)"
            )
    return tuple(
        ClaimedGpu(index=record.gpus[k].index, uuid=record.gpus[k].uuid, vram_gb=ask.vram_gb)
        for k in positions
    )
