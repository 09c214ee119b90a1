"""What a GPU report means for capacity, stated once: a GPU with an error, or whose ``health``
(the agent's NVML probe) says failed, is not capacity; a degraded one is not either unless
the question includes degraded GPUs (``include_degraded``).

The agent (its heartbeat summary), the registry index, the capacity match, the fleet metrics
and the SQL reference query all ask :func:`is_usable` / :func:`usable_gpus`, or
:data:`USABLE_GPU_SQL` in SQL; a test holds the two to the same answers. The GPU state
itself has one copy per contract (``messages.GpuMetrics`` between agent and ingest,
``store.GpuState`` between ingest and API, ``api.schemas.Gpu`` over HTTP); a test checks
that the store and HTTP copies have the same fields and that they are the wire's, in the
wire's order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Protocol, TypeVar

__all__ = ["USABLE_GPU_SQL", "GpuReport", "is_usable", "usable_gpus"]


class GpuReport(Protocol):
    @property
    def error(self) -> str | None: ...

    @property
    def health(self) -> str | None: ...


G = TypeVar("G", bound=GpuReport)

# The same rule over one element ``g`` of a heartbeat's ``gpus`` jsonb array (the default:
# degraded GPUs excluded). A GPU without ``health`` (an older agent) is judged by its error.
USABLE_GPU_SQL: Final = (
    "coalesce(g->>'error', '') = '' AND coalesce(g->>'health', 'ok') NOT IN ('degraded', 'failed')"
)
_NOT_USABLE: Final = frozenset({"degraded", "failed"})
_NOT_USABLE_EVEN_DEGRADED: Final = frozenset({"failed"})


def is_usable(gpu: GpuReport, *, include_degraded: bool = False) -> bool:
    """A GPU counts as capacity when it is reported without an error (None or empty) and
    its health is not failed, nor degraded unless ``include_degraded``."""
    if gpu.error:
        return False
    return gpu.health not in (_NOT_USABLE_EVEN_DEGRADED if include_degraded else _NOT_USABLE)


def usable_gpus(gpus: Iterable[G], *, include_degraded: bool = False) -> list[G]:
    """The GPUs that count as capacity (:func:`is_usable`), in their order."""
    # is_usable inlined: the index calls this per row
    bad = _NOT_USABLE_EVEN_DEGRADED if include_degraded else _NOT_USABLE
    return [g for g in gpus if not g.error and g.health not in bad]
