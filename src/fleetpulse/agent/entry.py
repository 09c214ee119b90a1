"""``fleetpulse agent`` and ``fleetpulse simulate``: an event loop, signals, exit codes."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from fleetpulse.agent.runner import Agent
from fleetpulse.agent.simulate import Simulator
from fleetpulse.config import Settings
from fleetpulse.errors import ConfigError

__all__ = ["run_agent", "run_simulate"]

log = logging.getLogger(__name__)


def _run(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; be kind without it
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _on_signals(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)


async def _agent_main(settings: Settings) -> int:
    async with Agent(settings) as agent:
        _on_signals(agent.request_stop)
        await agent.run()
    return 0


def run_agent(settings: Settings) -> int:
    """Run the desktop agent until SIGINT/SIGTERM; 0 on a clean stop."""
    return _run(_agent_main(settings))


async def _simulate_main(
    settings: Settings,
    *,
    agents: int,
    profile: str,
    interval_s: float | None,
    seed: int,
    duration_s: float | None,
) -> int:
    try:
        simulator = Simulator(
            settings, agents=agents, profile=profile, interval_s=interval_s, seed=seed
        )
    except ValueError as exc:
        raise ConfigError(f"simulate: {exc}") from None
    async with simulator:
        _on_signals(simulator.request_stop)
        assert simulator.publisher is not None
        log.info("simulating %d %s agents every %gs", agents, profile, simulator.interval_s)
        await simulator.run(duration_s)
        log.info(
            "simulate stopped: %d heartbeats, %d published",
            simulator.samples_total,
            simulator.publisher.published_total,
        )
    return 0


def run_simulate(
    settings: Settings,
    *,
    agents: int,
    profile: str,
    interval_s: float | None,
    seed: int,
    duration_s: float | None,
) -> int:
    """Run ``agents`` simulated agents until signalled or ``duration_s``; 0 on a clean stop."""
    return _run(
        _simulate_main(
            settings,
            agents=agents,
            profile=profile,
            interval_s=interval_s,
            seed=seed,
            duration_s=duration_s,
        )
    )
