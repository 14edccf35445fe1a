"""Keep the resident memory of a long copy flat.

Each instance in flight is a ~0.5 MB ``bytes`` buffer allocated and freed by
several worker threads.  glibc's malloc raises its mmap threshold dynamically
after the first such buffer is freed; from then on these buffers come from
per-thread arenas, which fragment and are trimmed lazily, so peak RSS grows
with the run's length and timing (seen: 227 MB for 2,000 CT instances under
load, against 55 MB for the same copy on a quiet machine).  Fixing the
threshold (``M_MMAP_THRESHOLD``, which also turns the dynamic adjustment off)
makes every large buffer its own mapping, returned to the system when freed,
and ``M_ARENA_MAX`` bounds the number of arenas.  Elsewhere than glibc this
does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_malloc(mmap_threshold: int = 256 * 1024, arena_max: int = 4) -> bool:
    """Apply the settings above; return whether glibc accepted them."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: glibc's mallopt, if any
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_ARENA_MAX, arena_max))
    if not ok:
        log.debug("mallopt refused the memory settings")
    return ok
