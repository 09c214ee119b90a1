from __future__ import annotations

import uuid

from tests.fixtures.ingest import (
    heartbeat,
    publish,
    running_ingest,
    scalar,
    settings_for,
    wait_until,
)


async def test_smoke(db_url: str, amqp_url: str) -> None:
    settings = settings_for(db_url, amqp_url)
    agent = uuid.uuid4()
    async with running_ingest(settings) as (ingest, rec, _):
        await publish(amqp_url, [heartbeat(agent, i) for i in range(1, 6)])
        await wait_until(lambda: rec.heartbeats >= 5)
    assert scalar(db_url, "SELECT count(*) FROM agent_samples") == 5
    assert scalar(db_url, "SELECT last_seq FROM agent_registry") == 5
