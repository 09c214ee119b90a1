"""fleetpulse.ingest (not built yet)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["create_agent_credentials", "run_ingest"]


def run_ingest(*args: Any, **kwargs: Any) -> int:
    print("fleetpulse: run_ingest is not built yet", file=sys.stderr)
    return 2


def create_agent_credentials(*args: Any, **kwargs: Any) -> int:
    print("fleetpulse: create_agent_credentials is not built yet", file=sys.stderr)
    return 2
