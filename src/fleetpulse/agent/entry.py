"""``fleetpulse agent`` and ``fleetpulse simulate``: an event loop, signals, exit codes."""

from __future__ import annotations

import logging

from fleetpulse.agent.runner import Agent
from fleetpulse.agent.simulate import Simulator
from fleetpulse.config import Settings
from fleetpulse.errors import ConfigError
from fleetpulse.lifecycle import run_main, stop_signals

__all__ = ["run_agent", "run_simulate"]

log = logging.getLogger(__name__)


async def _agent_main(settings: Settings) -> int:
    agent = Agent(settings)
    with stop_signals(agent.request_stop):
        async with agent:
            await agent.run()
    return 0


def run_agent(settings: Settings) -> int:
    """Run the desktop agent until SIGINT/SIGTERM; 0 on a clean stop."""
    # The stock event loop: one message per interval gains nothing from uvloop, and its
    # import costs the light agent a megabyte and a half of memory.
    return run_main(_agent_main(settings), fast_loop=False)


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
    with stop_signals(simulator.request_stop):
        async with simulator:
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
    return run_main(
        _simulate_main(
            settings,
            agents=agents,
            profile=profile,
            interval_s=interval_s,
            seed=seed,
            duration_s=duration_s,
        )
    )
