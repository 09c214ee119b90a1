from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import pytest

from fleetpulse.agent import FakeClock
from fleetpulse.config import AmqpSettings, Settings
from fleetpulse.ingest import create_agent_credentials

AgentUser = Callable[[uuid.UUID], str]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=datetime.now(UTC))


@pytest.fixture
def agent_user(rabbit_admin, amqp_url: str) -> Iterator[AgentUser]:
    """``agent_user(agent_id)``: the AMQP URL of a real broker user made by
    ``fleetpulse admin agent-credentials`` for that agent (deleted after the test)."""
    created: list[str] = []

    def make(agent_id: uuid.UUID) -> str:
        name = f"fp-test-{uuid.uuid4().hex[:10]}"
        password = uuid.uuid4().hex
        code = create_agent_credentials(
            Settings(amqp=AmqpSettings(url=amqp_url)),
            name=name,
            agent_id=str(agent_id),
            password=password,
        )
        assert code == 0
        created.append(name)
        parts = urlsplit(amqp_url)
        return urlunsplit(parts._replace(netloc=f"{name}:{password}@{parts.hostname}:{parts.port}"))

    yield make
    for name in created:
        rabbit_admin.client.delete(f"/api/users/{name}")


def user_of(url: str) -> str:
    return urlsplit(url).username or ""
