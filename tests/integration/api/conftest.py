from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from fleetpulse.api import create_app
from tests.fixtures.api import api_settings

Client = AsyncTestClient[Litestar]


@pytest.fixture
def conn(db_url: str) -> psycopg.Connection[Any]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def client_for(db_url: str) -> Callable[..., AbstractAsyncContextManager[Client]]:
    """Start the app (lifespan included) over the test database; seed before entering."""

    @asynccontextmanager
    async def start(**api: Any) -> AsyncIterator[Client]:
        app = create_app(api_settings(db_url, **api))
        async with AsyncTestClient(app=app) as client:
            yield client

    return start
