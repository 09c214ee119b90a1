"""Not built yet."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["run_up"]


def run_up(*args: Any, **kwargs: Any) -> int:
    print("fleetpulse: run_up is not built yet", file=sys.stderr)
    return 2
