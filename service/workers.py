"""The threads that do a request's CPU work: decoding, resampling, log-mels and inference.

They run a few nice levels below the event loop. On a saturated core the loop then still gets
the larger share of the CPU, to read requests, refuse what cannot be admitted (a 503 in
milliseconds, not after its turn behind the number crunching) and send answers. Preparation
(decode to log-mel) has a pool of one thread per CPU the process may use, so admitted requests
are prepared in arrival order instead of all at once on dozens of threads, and the admission
estimate (windows x measured cost) holds.

On Linux the server's threads also run under ``SCHED_BATCH`` (:func:`batch_scheduling`): a thread
woken under it does not preempt the one running, so on a saturated core the event loop, woken by
each arriving request, waits for the worker's turn to end (its scheduler slice, checked at the
scheduler's tick: a few milliseconds) instead of cutting into a batch three times a request, and
then reads what arrived meanwhile in one go.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

from arinext.model.backends import cpu_threads

__all__ = ["SharedWorker", "batch_scheduling", "lower_thread_priority", "worker_pool"]

T = TypeVar("T")
# A queued job: its future, the callable and its arguments.
_Item = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]

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


def batch_scheduling() -> Callable[[], None] | None:
    """Put the calling thread, and every thread it starts from now on, under ``SCHED_BATCH``.

    For throughput on a busy CPU: fewer context switches and cache refills per request
    (docs/performance.md). The nice levels still apply. Needs no privilege. Only
    from the default policy: a server an operator started as real-time or idle (``chrt``) keeps
    that. Returns a function that restores the calling thread's policy, or None where nothing
    changed (not Linux, another policy, or a sandbox that forbids it).
    """
    if not hasattr(os, "SCHED_BATCH") or os.sched_getscheduler(0) != os.SCHED_OTHER:
        return None
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))  # 0: the calling thread
    except OSError as exc:
        logger.info("the server's threads keep the default scheduling policy: %s", exc)
        return None
    caller = threading.get_native_id()

    def restore() -> None:
        with contextlib.suppress(OSError):  # the thread is gone, or a sandbox changed its mind
            os.sched_setscheduler(caller, os.SCHED_OTHER, os.sched_param(0))

    return restore


def worker_pool(name: str, threads: int = 0, niceness: int = 0) -> ThreadPoolExecutor:
    """A pool of ``threads`` (0: one per usable CPU) worker threads ``niceness`` levels nicer."""
    return ThreadPoolExecutor(
        max_workers=threads or cpu_threads(),
        thread_name_prefix=name,
        initializer=lower_thread_priority,
        initargs=(niceness,),
    )


class SharedWorker(Executor):
    """The one worker thread of a one-CPU server: it prepares requests and runs their batches.

    Jobs run in submission order, except that :meth:`submit_first` jobs (batches taken from the
    queue) go before every ordinary job still waiting (preparations that arrived while the batch
    was formed). A taken batch then waits only for the job already running and for batches taken
    before it (other models' on a multi-model server).

    Built on a one-thread ``ThreadPoolExecutor`` (its thread naming, niceness and joining at
    interpreter exit): each submission queues its job here and one turn there, and each turn
    runs whichever queued job comes first.
    """

    def __init__(self, name: str = "worker", niceness: int = 0) -> None:
        self._pool = worker_pool(name, 1, niceness)
        self._lock = threading.Lock()
        self._first: deque[_Item] = deque()
        self._rest: deque[_Item] = deque()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` after the jobs submitted before it."""
        return self._put(self._rest, fn, args, kwargs)

    def submit_first(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` next, before the ordinary jobs still waiting."""
        return self._put(self._first, fn, args, kwargs)

    def _put(
        self,
        queue: deque[_Item],
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            queue.append((future, fn, args, kwargs))
            try:
                self._pool.submit(self._turn)
            except RuntimeError:  # shut down: as ThreadPoolExecutor.submit says it
                queue.pop()
                raise
        return future

    def _turn(self) -> None:
        with self._lock:
            future, fn, args, kwargs = (self._first or self._rest).popleft()
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller, as ThreadPoolExecutor does
            future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking jobs; finish the queued ones unless ``cancel_futures``."""
        if cancel_futures:
            with self._lock:
                for queue in (self._first, self._rest):
                    for future, *_ in queue:
                        future.cancel()
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)
