"""fleetpulse.agent: the desktop agent and its simulator.

``run_agent`` / ``run_simulate`` are the CLI's entry points. ``Agent`` (async context
manager, ``run()``) takes injected collectors, clock and spool for tests; the fakes
and the simulated fleet (``build_fleet``, profiles documented in ``profiles``) are
public so other components' tests can drive real heartbeats through the broker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what mypy and readers see; the same names, loaded on first use, below
    from fleetpulse.agent.clock import Clock as Clock, SystemClock as SystemClock
    from fleetpulse.agent.collectors import (
        Collector as Collector,
        Contribution as Contribution,
        HostCollector as HostCollector,
        HostReading as HostReading,
    )
    from fleetpulse.agent.entry import run_agent as run_agent, run_simulate as run_simulate
    from fleetpulse.agent.fakes import (
        FailingCollector as FailingCollector,
        FakeClock as FakeClock,
        FakeGpuCollector as FakeGpuCollector,
        FakeHostCollector as FakeHostCollector,
    )
    from fleetpulse.agent.gpu import GpuCollector as GpuCollector
    from fleetpulse.agent.heartbeat import (
        Identity as Identity,
        build_goodbye as build_goodbye,
        build_heartbeat as build_heartbeat,
        resource_metrics as resource_metrics,
        restamp as restamp,
    )
    from fleetpulse.agent.offer import (
        OfferPolicy as OfferPolicy,
        PresenceCollector as PresenceCollector,
    )
    from fleetpulse.agent.presence import (
        PresenceReading as PresenceReading,
        detect_source as detect_source,
    )
    from fleetpulse.agent.profiles import (
        PROFILES as PROFILES,
        Machine as Machine,
        Profile as Profile,
        build_fleet as build_fleet,
    )
    from fleetpulse.agent.publisher import (
        CONNECTION_EXCEPTIONS as CONNECTION_EXCEPTIONS,
        Publisher as Publisher,
    )
    from fleetpulse.agent.runner import Agent as Agent, default_collectors as default_collectors
    from fleetpulse.agent.simulate import Simulator as Simulator
    from fleetpulse.agent.spool import (
        MemorySpool as MemorySpool,
        Spool as Spool,
        SpoolEntry as SpoolEntry,
        SqliteSpool as SqliteSpool,
    )
    from fleetpulse.agent.state import StateDir as StateDir, resolve_identity as resolve_identity
else:
    from fleetpulse._lazy import lazy_face

    __all__, __getattr__, __dir__ = lazy_face(
        __name__,
        {
            "clock": "Clock SystemClock",
            "collectors": "Collector Contribution HostCollector HostReading",
            "entry": "run_agent run_simulate",
            "fakes": "FailingCollector FakeClock FakeGpuCollector FakeHostCollector",
            "gpu": "GpuCollector",
            "heartbeat": "Identity build_goodbye build_heartbeat resource_metrics restamp",
            "offer": "OfferPolicy PresenceCollector",
            "presence": "PresenceReading detect_source",
            "profiles": "PROFILES Machine Profile build_fleet",
            "publisher": "CONNECTION_EXCEPTIONS Publisher",
            "runner": "Agent default_collectors",
            "simulate": "Simulator",
            "spool": "MemorySpool Spool SpoolEntry SqliteSpool",
            "state": "StateDir resolve_identity",
        },
    )
