"""The capacity question: what a scheduler asks for, and which of an agent's GPUs answer it."""

from __future__ import annotations

import msgspec

from fleetpulse.gpus import usable_gpus
from fleetpulse.store.allotment import Allotment
from fleetpulse.store.queries import AgentRecord

__all__ = ["CapacityFilter", "CapacityMatch", "matching_gpus"]


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
    # degraded GPUs (health) count too; answered by a scan of the online agents, not the
    # vectorised search, which holds the default rule
    include_degraded: bool = False

    @property
    def gpus_needed(self) -> int:
        """How many GPUs must satisfy the per-GPU conditions (0: no GPU condition)."""
        wants_gpu = self.min_gpu_vram_gb > 0 or self.gpu_type is not None
        return max(self.min_gpu_count, 1 if wants_gpu else 0)


class CapacityMatch(msgspec.Struct, frozen=True):
    record: AgentRecord
    matching_gpus: tuple[int, ...]
    reliability_30d: float | None
    allotment: Allotment | None = None  # claimable figures, when claims or cordons touch it


def matching_gpus(record: AgentRecord, query: CapacityFilter) -> tuple[int, ...]:
    """Indexes of the usable GPUs (:func:`~fleetpulse.gpus.usable_gpus`, degraded ones too
    when the query includes them) that satisfy the per-GPU conditions."""
    vram, kind = query.min_gpu_vram_gb, query.gpu_type
    usable = usable_gpus(record.gpus, include_degraded=query.include_degraded)
    if kind is None:  # a list comprehension, not a generator: this runs once per row returned
        return tuple([g.index for g in usable if g.vram_free_gb >= vram])
    return tuple([g.index for g in usable if g.vram_free_gb >= vram and g.name == kind])
