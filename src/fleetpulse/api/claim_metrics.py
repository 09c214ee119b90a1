"""Prometheus families of claims and cordons, rendered beside the fleet gauges.

Claimable and held capacity by pool (and GPU type), next to the observed gauges of
:func:`~fleetpulse.api.metrics.render_fleet`; active claims by holder, the busiest
``holder_limit`` holders by name and the rest summed as ``holder="_other"`` (a holder is
whatever a client sends, so its cardinality is bounded here); cordons by pool and kind.
A pure function of the registry rows and the holdings, like the fleet gauges.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from fleetpulse.api.metrics import GIB
from fleetpulse.store import AgentRecord, Allotment

__all__ = [
    "HOLDER_LIMIT",
    "OTHER_HOLDERS",
    "ClaimTotals",
    "corrected",
    "fleet_totals",
    "render_claims",
]

HOLDER_LIMIT: Final = 20
OTHER_HOLDERS: Final = "_other"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) or abs(value) >= 1e15 else str(int(value))


def _family(name: str, text: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
    lines += [f"{name}{{{labels}}} {_number(value)}" for labels, value in samples]
    return lines


def _labels(**labels: str) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())


class ClaimTotals:
    """Claimable and held capacity summed by pool (and GPU type), and cordons. Sums over the
    whole fleet are kept per registry version; a change of claims only corrects the rows
    of the agents holding something, so claims at hundreds a second cost no pass over the
    fleet."""

    def __init__(self) -> None:
        self.vram: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.cores: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.mem: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.cordons: dict[tuple[str, str], int] = defaultdict(int)

    def copy(self) -> ClaimTotals:
        other = ClaimTotals()
        for mine, theirs in (
            (self.vram, other.vram),
            (self.cores, other.cores),
            (self.mem, other.mem),
        ):
            for key, pair in mine.items():
                theirs[key] = list(pair)  # type: ignore[index]
        other.cordons.update(self.cordons)
        return other

    def add(
        self,
        records: Iterable[AgentRecord],
        allotment_of: Callable[[AgentRecord], Allotment | None],
        sign: int = 1,
    ) -> ClaimTotals:
        """Add (``sign`` -1: take away) what ``records`` contribute."""
        for r in records:
            a = allotment_of(r)
            pool = r.pool_name
            if a is not None:
                self.cordons[(pool, "agent")] += sign * (a.cordon is not None)
                self.cordons[(pool, "gpu")] += sign * sum(g.cordon is not None for g in a.gpus)
            if r.status != "online":
                continue
            offered = sign * (a is None or a.schedulable)
            cores, mem = self.cores[pool], self.mem[pool]
            cores[0] += (a.cpu_claimable_cores if a else r.cpu_available_cores) * offered
            mem[0] += (a.mem_claimable_gb if a else r.mem_available_gb) * offered
            if a is not None:
                cores[1] += sign * a.cpu_held_cores
                mem[1] += sign * a.mem_held_gb
            for k, g in enumerate(r.gpus):
                if g.error:
                    continue
                vram = self.vram[(pool, g.name or r.gpu_type)]
                if a is None:
                    vram[0] += sign * g.vram_free_gb
                else:
                    vram[0] += a.gpus[k].vram_claimable_gb * offered
                    vram[1] += sign * a.gpus[k].vram_held_gb
        return self


def _no_claims(record: AgentRecord) -> None:
    return None


def fleet_totals(records: Iterable[AgentRecord]) -> ClaimTotals:
    """The totals with nothing held (the base a change of claims corrects)."""
    return ClaimTotals().add(records, _no_claims)


def corrected(
    base: ClaimTotals,
    held: Iterable[AgentRecord],
    allotment_of: Callable[[AgentRecord], Allotment | None],
) -> ClaimTotals:
    """``base`` with the agents in ``held`` counted with their claims and cordons."""
    rows = list(held)
    return base.copy().add(rows, _no_claims, sign=-1).add(rows, allotment_of)


def render_claims(
    totals: ClaimTotals,
    claims_by_holder: Mapping[str, int],
    *,
    holder_limit: int = HOLDER_LIMIT,
) -> bytes:
    """The families of ``totals`` and the active claims per holder."""
    ranked = sorted(claims_by_holder.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ranked[:holder_limit]
    rest = sum(n for _, n in ranked[holder_limit:])
    if rest:
        shown.append((OTHER_HOLDERS, rest))
    vram, cores, mem = (
        sorted(totals.vram.items()),
        sorted(totals.cores.items()),
        sorted(totals.mem.items()),
    )
    lines = [
        *_family(
            "fleetpulse_capacity_gpu_vram_claimable_bytes",
            "VRAM left to claim on usable, uncordoned GPUs of online, uncordoned agents:"
            " min(free, total - held by active claims).",
            ((_labels(pool=p, gpu_type=t), round(v[0] * GIB)) for (p, t), v in vram),
        ),
        *_family(
            "fleetpulse_capacity_gpu_vram_held_bytes",
            "VRAM held by active claims on usable GPUs of online agents.",
            ((_labels(pool=p, gpu_type=t), round(v[1] * GIB)) for (p, t), v in vram),
        ),
        *_family(
            "fleetpulse_capacity_cpu_claimable_cores",
            "Cores left to claim on online, uncordoned agents.",
            ((_labels(pool=p), round(v[0])) for p, v in cores),
        ),
        *_family(
            "fleetpulse_capacity_cpu_held_cores",
            "Cores held by active claims on online agents.",
            ((_labels(pool=p), round(v[1])) for p, v in cores),
        ),
        *_family(
            "fleetpulse_capacity_mem_claimable_bytes",
            "Memory left to claim on online, uncordoned agents.",
            ((_labels(pool=p), round(v[0] * GIB)) for p, v in mem),
        ),
        *_family(
            "fleetpulse_capacity_mem_held_bytes",
            "Memory held by active claims on online agents.",
            ((_labels(pool=p), round(v[1] * GIB)) for p, v in mem),
        ),
        *_family(
            "fleetpulse_claims_active",
            f"Active claims by holder (the {holder_limit} with most by name, the rest as"
            f' holder="{OTHER_HOLDERS}").',
            ((_labels(holder=h), n) for h, n in shown),
        ),
        *_family(
            "fleetpulse_cordons",
            "Cordoned agents and GPUs by pool.",
            ((_labels(pool=p, kind=k), n) for (p, k), n in sorted(totals.cordons.items())),
        ),
    ]
    return ("\n".join(lines) + "\n").encode()
