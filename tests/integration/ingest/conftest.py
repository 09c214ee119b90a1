from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleetpulse.agent import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=datetime.now(UTC))
