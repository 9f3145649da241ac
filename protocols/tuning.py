"""Process-level tuning for large ring tensors (call once at start-up, before threads).

Protocols allocate many short-lived multi-megabyte int64 tensors. With glibc's defaults
each one is a fresh ``mmap`` whose pages fault in on first touch (half the CPU time of
a comparison batch went to the kernel), and per-thread arenas are capped at 64 MiB so
party threads fall back to ``mmap`` anyway. ``tune_allocator`` keeps freed memory in one
arena for reuse. Cost: the process's resident size stays near its peak. Used by the
benchmarks and the server entry point; never done at import time.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_allocator() -> bool:
    """Ask glibc to reuse freed big blocks instead of unmapping them. Returns False if not glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = True
    for param, value in (
        (_M_ARENA_MAX, 1),
        (_M_MMAP_THRESHOLD, 1 << 30),
        (_M_TRIM_THRESHOLD, (1 << 31) - 1),
        (_M_TOP_PAD, 64 << 20),
    ):
        ok = bool(mallopt(param, value)) and ok
    return ok
