"""Process-level memory settings for streaming a large day through Python and Arrow.

Keep freed memory in the process instead of handing it back to the OS after every batch.

glibc serves large blocks (every Arrow/numpy/bytes buffer of a batch) with fresh mmaps and
returns them on free, so each batch pays page faults to get the same memory back. On virtual
machines a fault is expensive (measured here: about 2 us per 4 KiB page, a third of the run
time of a large day). Raising the mmap and trim thresholds lets freed blocks be reused; peak
memory is unchanged, the process just keeps its high-water mark.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_KEEP_BYTES = 1 << 30
_tuned = False


def retain_freed_memory() -> bool:
    """Tune glibc's allocator once per process; False where there is no glibc (no-op)."""
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        # Older glibc caps the mmap threshold at 32 MiB: fall back to that.
        mmap_set = libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES) or libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        # One arena: with a retained heap per thread arena, worker threads would multiply the peak.
        _tuned = bool(mmap_set) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)) and bool(libc.mallopt(_M_ARENA_MAX, 1))
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    return _tuned


@contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """Keep the objects that exist now (the Dagster process: definitions, modules, instance)
    out of the cycle collector while a day streams through: batches allocate millions of
    objects, and every full collection they trigger would walk that whole heap again."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def streaming_day() -> Iterator[None]:
    """The settings above, for the body of an asset that streams a day in batches."""
    retain_freed_memory()
    with long_lived_objects_frozen():
        yield
