"""``fleetpulse capacity`` and ``fleetpulse events`` as processes against the real API."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime

import pytest

from fleetpulse.api import create_app
from tests.fixtures.api import (
    GpuSeed,
    api_settings,
    insert_event,
    live_server,
    seed_agent,
    seed_profiles,
)

pytestmark = pytest.mark.slow(3)


async def _cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleetpulse",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "FLEETPULSE_CONFIG": os.devnull},
    )


async def _run(*args: str) -> tuple[int, str, str]:
    proc = await _cli(*args)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_capacity_as_json_and_as_a_table(conn, db_url: str) -> None:
    seed_profiles(conn)
    seed_agent(conn, hostname="l4", pool="infer", gpus=(GpuSeed(24, 20, name="NVIDIA L4"),))
    async with live_server(create_app(api_settings(db_url, auth_tokens=["t0k"]))) as base:
        api = ("--api-url", base, "--token", "t0k")
        code, out, err = await _run(
            "capacity", *api, "--min-gpu-vram", "4", "--pool", "render", "--json"
        )
        assert code == 0, err
        answer = json.loads(out)
        assert [c["hostname"] for c in answer["items"]] == ["agent1"]
        assert answer["items"][0]["matching_gpus"] == [0]
        code, table, err = await _run(
            "capacity",
            *api,
            "--gpu-type",
            "NVIDIA L4",
            "--min-cores",
            "4",
            "--min-mem",
            "8",
            "--max-age",
            "600",
            "--limit",
            "5",
        )
        assert code == 0, err
        assert "l4" in table
        assert "agent1" not in table
        assert "1 matching" in table
        denied, _, why = await _run("capacity", "--api-url", base)
    assert denied == 1
    assert "pass --token" in why
    assert len(why.strip().splitlines()) == 1


async def test_events_listed_then_followed(conn, db_url: str) -> None:
    agent = seed_agent(conn, hostname="watched")  # its first_heartbeat event
    async with live_server(create_app(api_settings(db_url))) as base:
        code, listed, err = await _run("events", "--api-url", base, "--since", "2000-01-01")
        assert code == 0, err
        assert "watched (render)  new -> online  first_heartbeat" in listed
        proc = await _cli("events", "--api-url", base, "--follow", "--json", "--agent", str(agent))
        try:
            assert proc.stdout is not None
            first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
            later = insert_event(
                conn,
                agent,
                at=datetime.now(UTC),
                from_status="online",
                to_status="offline",
                reason="silence",
            )
            second = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
        finally:
            proc.terminate()
            await proc.wait()
    assert first["reason"] == "first_heartbeat"
    assert (second["id"], second["to_status"]) == (later, "offline")
