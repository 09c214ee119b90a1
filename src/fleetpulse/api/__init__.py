"""fleetpulse.api (not built yet)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["run_api", "run_status"]


def run_api(*args: Any, **kwargs: Any) -> int:
    print("fleetpulse: run_api is not built yet", file=sys.stderr)
    return 2


def run_status(*args: Any, **kwargs: Any) -> int:
    print("fleetpulse: run_status is not built yet", file=sys.stderr)
    return 2
