"""What a GPU report means for capacity, stated once: a GPU with an error is not capacity.

The agent (its heartbeat summary, which also leaves out GPUs whose ``health`` says failed or
degraded), the registry index, the capacity match, the fleet metrics and the SQL reference
query all ask :func:`is_usable` / :func:`usable_gpus`, or :data:`USABLE_GPU_SQL` in SQL; a
test holds the two to the same answers. The GPU state itself has one copy per contract
(``messages.GpuMetrics`` between agent and ingest, ``store.GpuState`` between ingest and
API, ``api.schemas.Gpu`` over HTTP); a test checks that the store and HTTP copies have the
same fields and that they are the wire's, in the wire's order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Protocol, TypeVar

__all__ = ["USABLE_GPU_SQL", "GpuReport", "is_usable", "usable_gpus"]


class GpuReport(Protocol):
    @property
    def error(self) -> str | None: ...


G = TypeVar("G", bound=GpuReport)

# The same rule over one element ``g`` of a heartbeat's ``gpus`` jsonb array.
USABLE_GPU_SQL: Final = "coalesce(g->>'error', '') = ''"


def is_usable(gpu: GpuReport) -> bool:
    """A GPU counts as capacity when it is reported without an error (None or empty)."""
    return not gpu.error


def usable_gpus(gpus: Iterable[G]) -> list[G]:
    """The GPUs that count as capacity (:func:`is_usable`), in their order."""
    return [g for g in gpus if not g.error]  # is_usable inlined: the index calls this per row
