"""fleetpulse.agent (not built yet)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["run_agent", "run_simulate"]


def run_agent(*args: Any, **kwargs: Any) -> int:
    print("fleetpulse: run_agent is not built yet", file=sys.stderr)
    return 2


def run_simulate(*args: Any, **kwargs: Any) -> int:
    print("fleetpulse: run_simulate is not built yet", file=sys.stderr)
    return 2
