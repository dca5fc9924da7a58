"""Give the memory freed after a burst of requests back to the operating system.

glibc's malloc keeps freed memory in its arenas (one per thread that allocates) and returns it on
its own only from the top of the main heap. After a burst, with decode buffers and log-mels
allocated by worker threads, the server's RSS stays well above where it was although Python
has freed everything, until ``malloc_trim(0)`` (docs/performance.md). The lifespan runs
:func:`trim_when_idle`.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable

__all__ = ["IDLE_TRIM_SECONDS", "release_free_memory", "trim_when_idle"]

logger = logging.getLogger(__name__)

# How often the server gives freed memory back once its models fall idle after work (a
# benchmark that reads RSS after a burst waits this long).
IDLE_TRIM_SECONDS = 10.0


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; absent from musl, macOS and Windows
    except (AttributeError, OSError, TypeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Return the free pages of every malloc arena to the OS; False where the C library has no
    ``malloc_trim`` (nothing to do there)."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


async def trim_when_idle(
    activity: Callable[[], int], busy: Callable[[], bool], period: float
) -> None:
    """Every ``period`` seconds, release free memory if work was done since the last time and
    none is in flight now (trimming walks the arenas under their locks: not while serving)."""
    seen = activity()
    while True:
        await asyncio.sleep(period)
        done = activity()
        if done != seen and not busy():
            seen = done
            if await asyncio.to_thread(release_free_memory):
                logger.debug("returned free heap memory to the OS")
