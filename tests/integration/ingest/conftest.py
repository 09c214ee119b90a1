from __future__ import annotations

import pytest

from tests.fixtures.ingest import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
