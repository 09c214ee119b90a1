"""The publisher built from settings: one mapping of ``[amqp]`` and ``[agent]`` onto it."""

from __future__ import annotations

from datetime import UTC, datetime

from fleetpulse.agent import MemorySpool, Publisher
from fleetpulse.config import load_settings


def test_from_settings_takes_the_url_and_the_agent_timeouts() -> None:
    settings = load_settings(
        environ={
            "FLEETPULSE_AMQP_URL": "amqp://agent7:secret@broker:5672/fleet",
            "FLEETPULSE_AGENT_CONNECT_TIMEOUT_S": "3.5",
            "FLEETPULSE_AGENT_CONFIRM_TIMEOUT_S": "4.5",
        }
    )
    spool = MemorySpool(1024)
    publisher = Publisher.from_settings(settings, spool, now=lambda: datetime.now(UTC))
    assert (publisher.url, publisher.user) == ("amqp://agent7:secret@broker:5672/fleet", "agent7")
    assert (publisher.connect_timeout_s, publisher.confirm_timeout_s) == (3.5, 4.5)
    assert publisher.batch_size == 256
    assert (
        Publisher.from_settings(settings, spool, now=datetime.now, batch_size=512).batch_size == 512
    )
