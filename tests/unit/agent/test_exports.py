"""The agent's public face: everything in ``__all__`` exists and is the agent's own."""

from __future__ import annotations

import fleetpulse.agent as agent


def test_every_export_exists_and_comes_from_the_agent_package() -> None:
    assert sorted(agent.__all__) == sorted(set(agent.__all__))
    for name in agent.__all__:
        value = getattr(agent, name)
        if callable(value) and not isinstance(value, tuple):
            assert value.__module__.startswith("fleetpulse.agent."), name
