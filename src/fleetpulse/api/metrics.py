"""Prometheus exposition: fleet gauges rendered from a snapshot, plus live request metrics.

The fleet part is a pure function of the registry rows (:func:`render_fleet`), rendered in
the background every ``metrics_refresh_interval_s``; a scrape only concatenates bytes, so a
scrape never runs a query and its cost does not grow with the fleet.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Final

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from fleetpulse.gpus import usable_gpus
from fleetpulse.store import AgentRecord

__all__ = [
    "CONTENT_TYPE",
    "GIB",
    "RequestMetrics",
    "render_fleet",
    "request_metrics_middleware",
]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
GIB: Final = 1024.0**3
STATUSES: Final = ("online", "offline")
# Label values are bounded: withheld reasons and GPU health reasons by kind, never a process
# name or an XID number (``exclusive_process:blender`` -> ``exclusive_process``).
WITHHELD_KINDS: Final = ("user_active", "exclusive_process", "outside_hours")
GPU_REASON_KINDS: Final = (
    "xid",
    "throttle:hw_slowdown",
    "throttle:sw_thermal",
    "throttle:hw_thermal",
    "throttle:power_brake",
    "retired_pages_pending",
    "row_remap_pending",
    "row_remap_failure",
    "ecc_uncorrected",
    "error",
)


def _kind(reason: str, known: tuple[str, ...]) -> str:
    if reason in known:
        return reason
    head = reason.split(":", 1)[0]
    return head if head in known else "other"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) or abs(value) >= 1e15 else str(int(value))


class _Family:
    def __init__(self, name: str, kind: str, text: str) -> None:
        self.lines = [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        self.name = name

    def add(self, labels: str, value: float) -> None:
        self.lines.append(f"{self.name}{{{labels}}} {_number(value)}")


def render_fleet(
    records: Iterable[AgentRecord], *, now: float, per_agent_limit: int
) -> tuple[bytes, int]:
    """Fleet gauges of the registry rows; returns the text and how many agents were left out
    of the per-agent series because of ``per_agent_limit``."""
    agents: dict[tuple[str, str], int] = defaultdict(int)
    vram: dict[tuple[str, str], float] = defaultdict(float)
    gpus: dict[tuple[str, str], int] = defaultdict(int)
    cores: dict[str, int] = defaultdict(int)
    mem: dict[str, float] = defaultdict(float)
    withheld: dict[tuple[str, str], int] = defaultdict(int)
    sick: dict[tuple[str, str], int] = defaultdict(int)
    sick_gpus: dict[tuple[str, str], int] = defaultdict(int)
    rows = sorted(records, key=lambda r: r.agent_id.int)  # UUID order, without UUID.__lt__
    for r in rows:
        agents[(r.pool_name, r.status)] += 1
        if r.status != "online":
            continue
        for g in r.gpus:
            health = "failed" if g.error else g.health
            if health in {"degraded", "failed"}:
                sick_gpus[(r.pool_name, str(health))] += 1
                reasons = {_kind(x, GPU_REASON_KINDS) for x in g.health_reasons} or {"error"}
                for reason in reasons:
                    sick[(r.pool_name, reason)] += 1
        if not r.offered:
            withheld[(r.pool_name, _kind(r.withheld_reason or "", WITHHELD_KINDS))] += 1
            continue  # its owner does not offer it: no capacity
        cores[r.pool_name] += r.cpu_available_cores
        mem[r.pool_name] += r.mem_available_gb
        for g in usable_gpus(r.gpus):
            key = (r.pool_name, g.name or r.gpu_type)
            gpus[key] += 1
            vram[key] += g.vram_free_gb
    pools = sorted({pool for pool, _ in agents})
    fam_agents = _Family("fleetpulse_agents", "gauge", "Agents in the registry by pool and status.")
    for pool in pools:
        for status in STATUSES:
            fam_agents.add(_labels(pool=pool, status=status), agents.get((pool, status), 0))
    # every (pool, kind) and (pool, health) pair, zero included, as fleetpulse_agents does
    fam_withheld = _Family(
        "fleetpulse_agents_withheld",
        "gauge",
        "Online agents their owners withhold from jobs, by pool and kind of reason.",
    )
    fam_sick = _Family(
        "fleetpulse_gpus_unhealthy",
        "gauge",
        "GPUs of online agents that are degraded or failed (not capacity), by pool and health.",
    )
    fam_reasons = _Family(
        "fleetpulse_gpu_health_reasons",
        "gauge",
        "Unhealthy GPUs of online agents by pool and kind of reason (one GPU may have several).",
    )
    for pool in pools:
        for kind in (*WITHHELD_KINDS, "other"):
            if kind != "other" or withheld.get((pool, kind)):
                fam_withheld.add(_labels(pool=pool, reason=kind), withheld.get((pool, kind), 0))
        for health in ("degraded", "failed"):
            fam_sick.add(_labels(pool=pool, health=health), sick_gpus.get((pool, health), 0))
    for pool, kind in sorted(sick):
        fam_reasons.add(_labels(pool=pool, reason=kind), sick[(pool, kind)])
    fam_vram = _Family(
        "fleetpulse_capacity_gpu_vram_free_bytes",
        "gauge",
        "Free VRAM on usable (healthy) GPUs of online agents their owners offer.",
    )
    fam_gpus = _Family(
        "fleetpulse_capacity_gpus", "gauge", "Usable GPUs of online agents their owners offer."
    )
    for pool, kind in sorted(gpus):
        fam_vram.add(_labels(pool=pool, gpu_type=kind), vram[(pool, kind)] * GIB)
        fam_gpus.add(_labels(pool=pool, gpu_type=kind), gpus[(pool, kind)])
    fam_cores = _Family(
        "fleetpulse_capacity_cpu_available_cores",
        "gauge",
        "Available cores of online agents their owners offer.",
    )
    fam_mem = _Family(
        "fleetpulse_capacity_mem_available_bytes",
        "gauge",
        "Available memory of online agents their owners offer.",
    )
    for pool in pools:
        fam_cores.add(_labels(pool=pool), cores.get(pool, 0))
        fam_mem.add(_labels(pool=pool), mem.get(pool, 0.0) * GIB)
    per_agent = [
        _Family("fleetpulse_agent_up", "gauge", "1 if the agent is online."),
        _Family("fleetpulse_agent_offered", "gauge", "1 if its owner offers the agent to jobs."),
        _Family(
            "fleetpulse_agent_gpu_vram_available_bytes",
            "gauge",
            "Largest free VRAM on one GPU of the agent.",
        ),
        _Family("fleetpulse_agent_cpu_available_cores", "gauge", "Available cores of the agent."),
        _Family(
            "fleetpulse_agent_heartbeat_age_seconds",
            "gauge",
            "Seconds since the agent's last heartbeat was received.",
        ),
        _Family(
            "fleetpulse_agent_gpu_probe_failures_total",
            "counter",
            "GPU probes that failed, as the agent reports.",
        ),
        _Family(
            "fleetpulse_agent_spool_dropped_total",
            "counter",
            "Samples the agent dropped from its spool, as it reports.",
        ),
        _Family(
            "fleetpulse_agent_clock_offset_seconds",
            "gauge",
            "The agent's clock minus ingest's at its last heartbeat (positive: ahead).",
        ),
        _Family(
            "fleetpulse_agent_identity_clash",
            "gauge",
            "1 while two machines send as this agent (a cloned disk, a copied state dir).",
        ),
    ]
    up, offered, agent_vram, agent_cores, age, probe, dropped, offset, clash = per_agent
    for r in rows[:per_agent_limit]:
        labels = _labels(agent_id=str(r.agent_id), hostname=r.hostname, pool=r.pool_name)
        up.add(labels, 1 if r.status == "online" else 0)
        offered.add(labels, 1 if r.offered else 0)
        agent_vram.add(labels, r.gpu_vram_available_gb * GIB)
        agent_cores.add(labels, r.cpu_available_cores)
        age.add(labels, round(max(0.0, now - r.last_heartbeat_at.timestamp()), 3))
        if r.gpu_probe_failures_total is not None:
            probe.add(labels, r.gpu_probe_failures_total)
        if r.spool_dropped_total is not None:
            dropped.add(labels, r.spool_dropped_total)
        if r.clock_offset_s is not None:
            offset.add(labels, r.clock_offset_s)
        clash.add(labels, 0 if r.identity_clash_since is None else 1)
    omitted = max(0, len(rows) - per_agent_limit)
    fam_omitted = _Family(
        "fleetpulse_metrics_agents_omitted",
        "gauge",
        "Agents left out of the per-agent series by metrics_per_agent_limit.",
    )
    fam_omitted.lines.append(f"fleetpulse_metrics_agents_omitted {omitted}")
    families = [
        fam_agents,
        fam_withheld,
        fam_sick,
        fam_reasons,
        fam_vram,
        fam_gpus,
        fam_cores,
        fam_mem,
        *per_agent,
        fam_omitted,
    ]
    text = "\n".join(line for fam in families for line in fam.lines) + "\n"
    return text.encode(), omitted


class RequestMetrics:
    """Request counters and latency by method and route template (never the raw path)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "fleetpulse_api_requests",
            "API requests by method, route and status.",
            ["method", "path", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "fleetpulse_api_request_duration_seconds",
            "API request latency by method and route.",
            ["method", "path"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )

        # The labelled children, looked up once per (method, route, status): ``labels()``
        # takes a lock and validates the labels on every call.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        key = (method, path, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(method, path, str(status)),
                self.duration.labels(method, path),
            )
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def request_metrics_middleware(metrics: RequestMetrics) -> object:
    """An ASGI middleware factory recording every routed HTTP request except streams' duration."""

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = 500

            async def capture(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                await app(scope, receive, capture)
            finally:
                path = scope.get("path_template") or "unmatched"
                metrics.observe(
                    str(scope.get("method", "GET")), path, status, time.perf_counter() - started
                )

        return middleware

    return factory
