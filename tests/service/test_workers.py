"""The worker threads: as many as the usable CPUs, nicer than the event loop, and on one CPU a
single thread that runs a taken batch before the preparations still waiting."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from arinext.model.backends import cpu_threads
from arinext.service.workers import SharedWorker, worker_pool

ROOT = Path(__file__).resolve().parents[2]

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


def test_shared_worker_is_nicer_too() -> None:
    worker = SharedWorker("test-shared-nice", 2)
    try:
        assert worker.submit(_niceness).result(5) == min(_niceness() + 2, 19)
    finally:
        worker.shutdown()


def test_shared_worker_runs_a_first_job_before_the_waiting_ones() -> None:
    worker = SharedWorker("test-shared-order")
    busy, order = threading.Event(), []
    try:
        running = worker.submit(busy.wait, 10)
        later = [worker.submit(order.append, name) for name in ("prepare 1", "prepare 2")]
        first = worker.submit_first(order.append, "batch")
        busy.set()
        for future in (running, *later, first):
            future.result(5)
    finally:
        worker.shutdown()
    assert order == ["batch", "prepare 1", "prepare 2"]


def test_shared_worker_hands_errors_back_and_shuts_down() -> None:
    worker = SharedWorker("test-shared-stop")
    started, busy = threading.Event(), threading.Event()
    with pytest.raises(ZeroDivisionError):
        worker.submit(lambda: 1 / 0).result(5)
    running = worker.submit(lambda: started.set() or busy.wait(10))
    assert started.wait(5)
    waiting = worker.submit(int, "7")
    queued = worker.submit_first(int, "8")
    worker.shutdown(wait=False, cancel_futures=True)
    assert waiting.cancelled() and queued.cancelled()
    with pytest.raises(RuntimeError, match="after shutdown"):
        worker.submit(int)
    busy.set()
    worker.shutdown()  # waits for the running job
    assert running.done() and running.result() is True


def test_a_process_exits_only_after_the_running_job(tmp_path: Path) -> None:
    """As with ThreadPoolExecutor, interpreter exit waits for the job the thread is running (a
    daemon thread would be killed inside it; inside ONNX Runtime that aborts the process)."""
    done = tmp_path / "done"
    script = f"""
import threading, time
from arinext.service.workers import SharedWorker
worker = SharedWorker("exit-test")
started = threading.Event()
def job():
    started.set()
    time.sleep(0.3)
    open({str(done)!r}, "w").close()
worker.submit(job)
started.wait(5)
worker.shutdown(wait=False, cancel_futures=True)
"""
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert done.exists()


def test_shared_worker_finishes_queued_jobs_on_a_plain_shutdown() -> None:
    worker = SharedWorker("test-shared-drain")
    futures = [worker.submit(time.sleep, 0.01) for _ in range(3)]
    worker.shutdown()
    assert all(future.done() and not future.cancelled() for future in futures)
