"""Not built yet."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["run_export"]


def run_export(*args: Any, **kwargs: Any) -> int:
    print("fleetpulse: run_export is not built yet", file=sys.stderr)
    return 2
