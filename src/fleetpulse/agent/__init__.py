"""fleetpulse.agent: the desktop agent and its simulator.

``run_agent`` / ``run_simulate`` are the CLI's entry points. ``Agent`` (async context
manager, ``run()``) takes injected collectors, clock and spool for tests; the fakes
and the simulated fleet (``build_fleet``, profiles documented in ``profiles``) are
public so other components' tests can drive real heartbeats through the broker.
"""

from __future__ import annotations

from fleetpulse.agent.backoff import Backoff
from fleetpulse.agent.clock import Clock, SystemClock
from fleetpulse.agent.collectors import Collector, Contribution, HostCollector, HostReading
from fleetpulse.agent.entry import run_agent, run_simulate
from fleetpulse.agent.fakes import FailingCollector, FakeClock, FakeGpuCollector, FakeHostCollector
from fleetpulse.agent.gpu import GpuCollector
from fleetpulse.agent.heartbeat import (
    Identity,
    build_goodbye,
    build_heartbeat,
    resource_metrics,
    restamp,
)
from fleetpulse.agent.profiles import PROFILES, Machine, Profile, build_fleet
from fleetpulse.agent.publisher import CONNECTION_EXCEPTIONS, Publisher
from fleetpulse.agent.runner import Agent, default_collectors
from fleetpulse.agent.simulate import Simulator
from fleetpulse.agent.spool import MemorySpool, Spool, SpoolEntry, SqliteSpool
from fleetpulse.agent.state import StateDir, resolve_identity

__all__ = [
    "CONNECTION_EXCEPTIONS",
    "PROFILES",
    "Agent",
    "Backoff",
    "Clock",
    "Collector",
    "Contribution",
    "FailingCollector",
    "FakeClock",
    "FakeGpuCollector",
    "FakeHostCollector",
    "GpuCollector",
    "HostCollector",
    "HostReading",
    "Identity",
    "Machine",
    "MemorySpool",
    "Profile",
    "Publisher",
    "Simulator",
    "Spool",
    "SpoolEntry",
    "SqliteSpool",
    "StateDir",
    "SystemClock",
    "build_fleet",
    "build_goodbye",
    "build_heartbeat",
    "default_collectors",
    "resolve_identity",
    "resource_metrics",
    "restamp",
    "run_agent",
    "run_simulate",
]
