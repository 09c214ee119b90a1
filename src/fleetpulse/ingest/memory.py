"""Handing memory back to the system after a burst of big messages.

CPython frees message bodies to the C allocator, and glibc keeps freed memory in its arenas
(bodies of 64-72 KiB sit below its mmap threshold): after a flood the process would stay
at its peak. ``malloc_trim`` returns the free pages; it is cheap when there is nothing to
give back, and ingest calls it only when it has settled everything after holding many
bytes. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from typing import Final

__all__ = ["TRIM_AFTER_BYTES", "map_big_blocks", "trim"]

log = logging.getLogger(__name__)

# Held more than this at some point: worth trimming once everything is settled.
TRIM_AFTER_BYTES: Final = 8 * 1024 * 1024


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:  # pragma: no cover - no C library to ask
        return None
    try:
        function = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    trimmed: Callable[[int], int] = function
    return trimmed


_TRIM: Final = _malloc_trim()
_M_MMAP_THRESHOLD: Final = -3
# Blocks this big or bigger get their own mapping, returned to the system when freed: a
# message body near the broker's limit never fragments the heap. Heartbeats (about 1 KiB)
# stay on the heap.
MMAP_THRESHOLD_BYTES: Final = 32 * 1024


def map_big_blocks() -> bool:
    """Ask glibc to map blocks of ``MMAP_THRESHOLD_BYTES`` and more; True if it agreed."""
    name = ctypes.util.find_library("c")
    if name is None:  # pragma: no cover
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def trim() -> bool:
    """Give free heap memory back to the system; True if there was some to give."""
    if _TRIM is None:  # pragma: no cover
        return False
    released = bool(_TRIM(0))
    log.debug("malloc_trim released memory: %s", released)
    return released
