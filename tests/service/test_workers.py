"""The worker threads: as many as the usable CPUs, and nicer than the event loop."""

from __future__ import annotations

import os
import threading
import time

import pytest

from model.backends import cpu_threads
from service.workers import worker_pool

pytestmark = pytest.mark.skipif(not hasattr(os, "setpriority"), reason="Unix nice levels")


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)  # on Linux: the calling thread's


def test_worker_threads_run_the_given_levels_nicer_than_the_caller() -> None:
    pool = worker_pool("test-nice", 1, 3)
    try:
        assert pool.submit(_niceness).result() == min(_niceness() + 3, 19)  # 19 is the most
    finally:
        pool.shutdown()
    assert _niceness() == os.getpriority(os.PRIO_PROCESS, os.getpid())  # the caller is untouched


def test_niceness_zero_leaves_threads_alone() -> None:
    pool = worker_pool("test-plain", 1, 0)
    try:
        assert pool.submit(_niceness).result() == _niceness()
    finally:
        pool.shutdown()


def test_default_pool_has_one_thread_per_usable_cpu() -> None:
    pool = worker_pool("test-size")
    seen: set[int] = set()

    def record() -> None:
        seen.add(threading.get_ident())
        time.sleep(0.05)

    try:
        for future in [pool.submit(record) for _ in range(cpu_threads() * 4)]:
            future.result()
    finally:
        pool.shutdown()
    assert len(seen) == cpu_threads()
