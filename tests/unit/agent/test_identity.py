"""The agent identity and the agent settings it is read from."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from fleetpulse.agent import (
    StateDir,
    resolve_identity,
)
from fleetpulse.config import AgentSettings, load_settings
from fleetpulse.errors import ConfigError


def test_identity_from_settings_and_its_checks(tmp_path: Any) -> None:
    agent_id = uuid.uuid4()
    state = StateDir(tmp_path)
    settings = AgentSettings(id=str(agent_id), pool="render", hostname="ws-1")
    identity = resolve_identity(settings, state)
    assert (identity.agent_id, identity.pool, identity.hostname) == (agent_id, "render", "ws-1")
    with pytest.raises(ConfigError, match=r"agent\.id = 'nope'"):
        resolve_identity(AgentSettings(id="nope"), state)
    with pytest.raises(ConfigError, match=r"agent\.pool"):
        resolve_identity(AgentSettings(id=str(agent_id), pool="Bad Pool"), state)


def test_agent_settings_added_for_the_gpu_probe_parse_from_env() -> None:
    settings = load_settings(
        environ={
            "FLEETPULSE_AGENT_GPU_NVML_MODULE": "fake_nvml",
            "FLEETPULSE_AGENT_GPU_RESPAWN_INITIAL_S": "0.1",
            "FLEETPULSE_AGENT_CONNECT_TIMEOUT_S": "3",
        }
    )
    assert settings.agent.gpu_nvml_module == "fake_nvml"
    assert settings.agent.gpu_respawn_initial_s == 0.1
    assert settings.agent.connect_timeout_s == 3.0
    assert settings.agent.gpu_timeout_s == 2.0
    with pytest.raises(ConfigError, match="FLEETPULSE_AGENT_GPU_TIMEOUT_S"):
        load_settings(environ={"FLEETPULSE_AGENT_GPU_TIMEOUT_S": "soon"})
