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

__all__ = ["HOLDER_LIMIT", "OTHER_HOLDERS", "render_claims"]

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


def render_claims(
    records: Iterable[AgentRecord],
    allotment_of: Callable[[AgentRecord], Allotment | None],
    claims_by_holder: Mapping[str, int],
    *,
    holder_limit: int = HOLDER_LIMIT,
) -> bytes:
    """The families for ``records`` (``allotment_of`` gives an agent's claimable figures,
    None when nothing is held on it) and the active claims per holder."""
    vram: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    cores: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    mem: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    cordons: dict[tuple[str, str], int] = defaultdict(int)
    for r in records:
        a = allotment_of(r)
        pool = r.pool_name
        if a is not None:
            cordons[(pool, "agent")] += a.cordon is not None
            cordons[(pool, "gpu")] += sum(g.cordon is not None for g in a.gpus)
        if r.status != "online":
            continue
        schedulable = a is None or a.schedulable
        held_cores = a.cpu_held_cores if a else 0
        held_mem = a.mem_held_gb if a else 0.0
        cores[pool][0] += (a.cpu_claimable_cores if a else r.cpu_available_cores) * schedulable
        cores[pool][1] += held_cores
        mem[pool][0] += (a.mem_claimable_gb if a else r.mem_available_gb) * schedulable
        mem[pool][1] += held_mem
        for k, g in enumerate(r.gpus):
            if g.error:
                continue
            key = (pool, g.name or r.gpu_type)
            if a is None:
                vram[key][0] += g.vram_free_gb
            else:
                vram[key][0] += a.gpus[k].vram_claimable_gb * schedulable
                vram[key][1] += a.gpus[k].vram_held_gb
    ranked = sorted(claims_by_holder.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ranked[:holder_limit]
    rest = sum(n for _, n in ranked[holder_limit:])
    if rest:
        shown.append((OTHER_HOLDERS, rest))
    lines = [
        *_family(
            "fleetpulse_capacity_gpu_vram_claimable_bytes",
            "VRAM left to claim on usable, uncordoned GPUs of online, uncordoned agents:"
            " min(free, total - held by active claims).",
            ((_labels(pool=p, gpu_type=t), v[0] * GIB) for (p, t), v in sorted(vram.items())),
        ),
        *_family(
            "fleetpulse_capacity_gpu_vram_held_bytes",
            "VRAM held by active claims on usable GPUs of online agents.",
            ((_labels(pool=p, gpu_type=t), v[1] * GIB) for (p, t), v in sorted(vram.items())),
        ),
        *_family(
            "fleetpulse_capacity_cpu_claimable_cores",
            "Cores left to claim on online, uncordoned agents.",
            ((_labels(pool=p), v[0]) for p, v in sorted(cores.items())),
        ),
        *_family(
            "fleetpulse_capacity_cpu_held_cores",
            "Cores held by active claims on online agents.",
            ((_labels(pool=p), v[1]) for p, v in sorted(cores.items())),
        ),
        *_family(
            "fleetpulse_capacity_mem_claimable_bytes",
            "Memory left to claim on online, uncordoned agents.",
            ((_labels(pool=p), v[0] * GIB) for p, v in sorted(mem.items())),
        ),
        *_family(
            "fleetpulse_capacity_mem_held_bytes",
            "Memory held by active claims on online agents.",
            ((_labels(pool=p), v[1] * GIB) for p, v in sorted(mem.items())),
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
            ((_labels(pool=p, kind=k), n) for (p, k), n in sorted(cordons.items())),
        ),
    ]
    return ("\n".join(lines) + "\n").encode()
