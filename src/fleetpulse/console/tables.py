"""The fleet, capacity answers and status events as terminal tables and lines (rich)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from rich.table import Table

from fleetpulse.client import Agent, Capacity, Event

__all__ = ["capacity_table", "event_line", "fleet_table", "pool_summary"]

_FLEET_COLUMNS = (
    "host",
    "pool",
    "status",
    "age s",
    "cores free",
    "mem free GiB",
    "GPU",
    "GPUs",
    "VRAM free GiB",
    "reliability",
)
_CAPACITY_COLUMNS = (
    "host",
    "pool",
    "age s",
    "cores free",
    "mem free GiB",
    "GPU",
    "GPUs fit",
    "VRAM free",
    "up 30d",
    "agent_id",
)


def _table(title: str, columns: Sequence[str]) -> Table:
    table = Table(title=title, header_style="bold")
    for name in columns:
        numeric = "free" in name or name in {"age s", "GPUs", "GPUs fit", "reliability", "up 30d"}
        # an id is copied whole into the next command, never cut
        width = 36 if name == "agent_id" else None
        table.add_column(name, justify="right" if numeric else "left", min_width=width)
    return table


def _order(agent: Agent) -> tuple[int, float, int, str]:
    return (
        0 if agent.status == "online" else 1,
        -agent.gpu_vram_available_gb,
        -agent.cpu_available_cores,
        agent.hostname,
    )


def _age(agent: Agent) -> str:
    return "-" if agent.sample_age_s is None else f"{agent.sample_age_s:.0f}"


def _reliability(agent: Agent) -> str:
    return "-" if agent.reliability_30d is None else f"{agent.reliability_30d:.1%}"


def _held(agent: Agent) -> str:
    """What active claims hold: ``GPU0 8, 4 cores, 16 GiB``."""
    parts = [f"GPU{g.index} {g.vram_held_gb:g}" for g in agent.gpus if g.vram_held_gb]
    if agent.cpu_held_cores:
        parts.append(f"{agent.cpu_held_cores} cores")
    if agent.mem_held_gb:
        parts.append(f"{agent.mem_held_gb:g} GiB")
    return ", ".join(parts) or "-"


def _cordons(agent: Agent) -> str:
    """``host by ops: fan; GPU1 by ops: Xid 79``."""
    parts = [] if agent.cordon is None else [f"host by {agent.cordon.by}: {agent.cordon.reason}"]
    parts += [f"GPU{g.index} by {g.cordon.by}: {g.cordon.reason}" for g in agent.gpus if g.cordon]
    return "; ".join(parts) or "-"


def _claimed_or_cordoned(agent: Agent) -> bool:
    return agent.claims is not None or agent.cordon is not None or any(g.cordon for g in agent.gpus)


def _reports_presence_or_health(agent: Agent) -> bool:
    return agent.presence is not None or not agent.offered or any(g.health for g in agent.gpus)


def _offer(agent: Agent) -> str:
    """Whether the owner offers the machine to jobs: ``yes``, or ``no (reason)``; GPUs that
    are not healthy follow (``gpu 1 degraded``)."""
    text = "yes" if agent.offered else f"[yellow]no ({agent.withheld_reason or '?'})[/]"
    sick = [f"gpu {g.index} {g.health}" for g in agent.gpus if g.health in {"degraded", "failed"}]
    return ", ".join([text, *sick])


def fleet_table(agents: Sequence[Agent]) -> Table:
    """Online first, then most free VRAM, most free cores, host name. The column ``jobs``
    (offered or withheld, unhealthy GPUs) appears only when some agent reports presence or
    GPU health; ``held`` and ``cordoned`` only when some agent has claims or a cordon."""
    extra = any(map(_claimed_or_cordoned, agents))
    desktop = any(map(_reports_presence_or_health, agents))
    columns = (
        _FLEET_COLUMNS + (("jobs",) if desktop else ()) + (("held", "cordoned") if extra else ())
    )
    table = _table("fleetpulse fleet", columns)
    for a in sorted(agents, key=_order):
        table.add_row(
            a.hostname,
            a.pool_name,
            "[green]online[/]" if a.status == "online" else "[red]offline[/]",
            _age(a),
            f"{a.cpu_available_cores}/{a.cpu_cores}",
            f"{a.mem_available_gb:.1f}/{a.mem_total_gb:.1f}",
            a.gpu_type,
            str(a.gpu_count),
            f"{a.gpu_vram_available_gb:.1f}",
            _reliability(a),
            *((_offer(a),) if desktop else ()),
            *((_held(a), _cordons(a)) if extra else ()),
        )
    return table


def capacity_table(found: Sequence[Capacity]) -> Table:
    """In the API's order (most free VRAM first). "GPUs fit": those matching the query, of all;
    "VRAM free": GiB on the best of them."""
    table = _table("fleetpulse capacity", _CAPACITY_COLUMNS)
    for c in found:
        usable = {g.index: g for g in c.gpus}
        vram = max((usable[i].vram_free_gb for i in c.matching_gpus if i in usable), default=0.0)
        table.add_row(
            c.hostname,
            c.pool_name,
            _age(c),
            f"{c.cpu_available_cores}/{c.cpu_cores}",
            f"{c.mem_available_gb:.1f}/{c.mem_total_gb:.1f}",
            c.gpu_type,
            f"{len(c.matching_gpus)}/{c.gpu_count}",
            f"{vram:.1f}",
            _reliability(c),
            str(c.agent_id),
        )
    return table


def pool_summary(agents: Sequence[Agent]) -> str:
    online: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for a in agents:
        total[a.pool_name] += 1
        online[a.pool_name] += a.status == "online"
    parts = [f"{pool} {online[pool]}/{total[pool]} online" for pool in sorted(total)]
    return "pools: " + (", ".join(parts) if parts else "none")


def event_line(event: Event) -> str:
    """``2026-12-06T08:00:01+00:00  #42  ws-7 (render)  online -> offline  silence  <id>``"""
    before = event.from_status or "new"
    line = (
        f"{event.at.isoformat(timespec='seconds')}  #{event.id}  {event.hostname}"
        f" ({event.pool_name})  {before} -> {event.to_status}  {event.reason}  {event.agent_id}"
    )
    if event.detail:  # claims and cordons: which claim or GPU, who, why
        line += "  " + " ".join(f"{k}={v}" for k, v in sorted(event.detail.items()))
    return line
