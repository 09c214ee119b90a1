"""The real ``fleetpulse agent`` process with an offer policy from its settings: every
heartbeat says whether the machine is offered and why not."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fixtures.agent import Inbox

pytestmark = [pytest.mark.timeout(40), pytest.mark.slow(4)]


def hours_excluding_now() -> str:
    """An offer window that has just closed, in local time (as the agent reads it)."""
    now = datetime.now(UTC).astimezone()
    start, end = now + timedelta(hours=1), now + timedelta(hours=2)
    return f"{start:%H}:00-{end:%H}:00"


async def test_the_agent_withholds_outside_its_hours_and_names_a_running_exclusive_process(
    amqp_url: str, tmp_path: Path, inbox: Inbox
) -> None:
    env = {
        **os.environ,
        "FLEETPULSE_AMQP_URL": amqp_url,
        "FLEETPULSE_AGENT_STATE_DIR": str(tmp_path),
        "FLEETPULSE_AGENT_HEARTBEAT_INTERVAL_S": "0.2",
        "FLEETPULSE_AGENT_PRESENCE_SOURCE": "none",
        "FLEETPULSE_AGENT_OFFER_HOURS": hours_excluding_now(),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetpulse", "agent", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        beats = await inbox.wait_heartbeats(2, timeout_s=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, stderr.decode()
    presence = beats[-1].presence
    assert presence is not None
    assert (presence.offered, presence.withheld_reason) == (False, "outside_hours")
    assert (presence.source, presence.user_idle_s) == ("none", None)

    # this test's own interpreter is a running process the policy can name
    env.pop("FLEETPULSE_AGENT_OFFER_HOURS")
    env["FLEETPULSE_AGENT_OFFER_EXCLUSIVE_PROCESSES"] = (
        "no-such-game,pytest," + Path(sys.executable).name
    )
    inbox.received.clear()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetpulse", "agent", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        beats = await inbox.wait_heartbeats(1, timeout_s=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 10)
    presence = beats[-1].presence
    assert presence is not None
    assert presence.offered is False
    assert presence.withheld_reason in {
        "exclusive_process:pytest",
        f"exclusive_process:{Path(sys.executable).name}",
    }
