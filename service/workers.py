"""The threads that do a request's CPU work: decoding, resampling, log-mels and inference.

They run a few nice levels below the event loop. On a saturated core the loop then still gets
the CPU at once to read requests, refuse what cannot be admitted (a 503 in milliseconds, not after
its turn behind the number crunching) and send answers. Preparation (decode to log-mel) has a
pool of one thread per CPU the process may use, so admitted requests are prepared in arrival
order instead of all at once on dozens of threads, and the admission estimate (windows x
measured cost) holds.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from model.backends import cpu_threads

__all__ = ["lower_thread_priority", "worker_pool"]

logger = logging.getLogger(__name__)


def lower_thread_priority(niceness: int) -> None:
    """Make the calling thread ``niceness`` levels nicer than the process (a pool initializer;
    Linux nice levels are per thread, and raising a thread's own needs no privilege)."""
    if niceness <= 0 or not hasattr(os, "setpriority"):  # off, or not a Unix
        return
    try:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), current + niceness)
    except OSError as exc:  # e.g. a sandbox that forbids it: run at the loop's priority
        logger.debug("could not lower a worker thread's priority: %s", exc)


def worker_pool(name: str, threads: int = 0, niceness: int = 0) -> ThreadPoolExecutor:
    """A pool of ``threads`` (0: one per usable CPU) worker threads ``niceness`` levels nicer."""
    return ThreadPoolExecutor(
        max_workers=threads or cpu_threads(),
        thread_name_prefix=name,
        initializer=lower_thread_priority,
        initargs=(niceness,),
    )
