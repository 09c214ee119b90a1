from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fixtures.agent import Inbox


@pytest.fixture
async def inbox(amqp_url: str) -> AsyncIterator[Inbox]:
    async with Inbox(amqp_url) as box:
        yield box
