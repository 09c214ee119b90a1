"""The API shows an agent's clock offset and an identity clash (issue 11, parts 2 and 3)."""

from __future__ import annotations

from tests.fixtures.api import GpuSeed, seed_agent
from tests.fixtures.ingest import wait_until


async def test_agent_rows_and_metrics_show_clock_offset_and_identity_clash(
    conn, client_for
) -> None:
    clashing = seed_agent(conn, gpus=(GpuSeed(24, 20),))
    plain = seed_agent(conn, hostname="ws-2")
    conn.execute(
        "UPDATE agent_registry SET clock_offset_s = 612.5, identity_clash_since = now(),"
        " updated_at = now() WHERE agent_id = %s",
        (clashing,),
    )
    async with client_for() as client:

        async def flagged() -> bool:
            answer = (await client.get(f"/api/v1/agents/{clashing}")).json()
            return "identity_clash_since" in answer

        await wait_until(flagged, timeout_s=10, what="the index to follow the update")
        row = (await client.get(f"/api/v1/agents/{clashing}")).json()
        other = (await client.get(f"/api/v1/agents/{plain}")).json()
        assert row["clock_offset_s"] == 612.5
        assert row["identity_clash_since"] is not None
        assert other.get("identity_clash_since") is None  # omitted at its default

        async def scraped() -> bool:
            text = (await client.get("/metrics")).text
            return f'fleetpulse_agent_identity_clash{{agent_id="{clashing}"' in text and (
                "fleetpulse_agent_clock_offset_seconds" in text
            )

        await wait_until(scraped, timeout_s=10)
        text = (await client.get("/metrics")).text
    flagged = [line for line in text.splitlines() if line.startswith("fleetpulse_agent_identity")]
    assert any(str(clashing) in line and line.endswith(" 1") for line in flagged)
    assert any(str(plain) in line and line.endswith(" 0") for line in flagged)
    offsets = [line for line in text.splitlines() if "clock_offset_seconds{" in line]
    assert any(str(clashing) in line and line.endswith(" 612.5") for line in offsets)
