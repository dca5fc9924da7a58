"""Behaviour that needs a real uvicorn process: chunked uploads, overload, SIGTERM, the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from arinext.service.workers import batch_scheduling
from tests.service import audio
from tests.service.conftest import TEST_BACKEND

WAV = {"content-type": "audio/wav"}
ONE_SECOND = audio.encode_sf(audio.signal(1.0, 16000), 16000, "WAV", "PCM_16")
SHORT = audio.encode_sf(audio.signal(0.5, 16000), 16000, "WAV", "PCM_16")


def test_chunked_upload_over_the_limit_is_refused_while_reading(
    server_factory: Callable, speech_artifact: Path
) -> None:
    limit = 100_000
    with (
        server_factory(models=speech_artifact, max_upload_bytes=limit) as server,
        httpx.Client(base_url=server.url, timeout=10.0) as client,
    ):

        def chunks() -> Iterator[bytes]:
            for _ in range(20):  # 320 KB with no Content-Length
                yield bytes(16_384)

        response = client.post("/classify", content=chunks(), headers=WAV)
        assert response.request.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in response.request.headers
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "upload_too_large"

        declared = client.post("/classify", content=bytes(limit + 1), headers=WAV)
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "upload_too_large"

        def small_chunks() -> Iterator[bytes]:
            yield ONE_SECOND[:1000]
            yield ONE_SECOND[1000:]

        assert client.post("/classify", content=small_chunks(), headers=WAV).status_code == 200
        assert 'arinext_rejections_total{reason="too_large"} 2.0' in client.get("/metrics").text


async def _burst(url: str, count: int) -> list[tuple[int, float, httpx.Response]]:
    """``count`` concurrent requests: (status, when the answer's headers arrived, response)."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as client:
        # Warm the server's code paths and open the connections before measuring.
        assert (await client.post("/classify", content=SHORT, headers=WAV)).status_code == 200
        await asyncio.gather(*(client.get("/healthz") for _ in range(count)))

        async def one() -> tuple[int, float, httpx.Response]:
            marks: dict[str, float] = {}

            async def trace(event: str, info: dict) -> None:
                marks[event] = time.perf_counter()

            response = await client.post(
                "/classify", content=SHORT, headers=WAV, extensions={"trace": trace}
            )
            return response.status_code, marks["http11.receive_response_headers.complete"], response

        return await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), 60)


def test_overload_gets_503_with_retry_after_without_waiting_and_admitted_requests_succeed(
    server_factory: Callable, slow_artifact: Path
) -> None:
    settings = {"models": slow_artifact, "queue_size": 2, "max_batch": 2, "max_queue_ms": 0}
    with server_factory(**settings) as server:
        results = asyncio.run(_burst(server.url, 16))
        statuses = [status for status, _, _ in results]
        assert set(statuses) <= {200, 503}, statuses
        assert statuses.count(200) >= 2 and statuses.count(503) >= 1, statuses
        last_success = max(at for status, at, _ in results if status == 200)
        for status, at, response in results:
            if status == 503:
                assert response.headers["retry-after"] == "1"
                assert response.json()["error"]["code"] == "overloaded"
                # Refused while admitted work was still running: a refusal never waits for room.
                assert at < last_success
            else:
                assert response.json()["predictions"][0]["head"] == "speech_commands"
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            assert client.post("/classify", content=SHORT, headers=WAV).status_code == 200
            metrics = client.get("/metrics").text
        refused = statuses.count(503)
        assert f'arinext_rejections_total{{reason="queue_full"}} {refused}.0' in metrics
        assert 'arinext_queue_depth{model="slow-speech"} 0.0' in metrics


def test_concurrent_requests_share_batches_under_load(
    server_factory: Callable, slow_artifact: Path
) -> None:
    with server_factory(models=slow_artifact, queue_size=64, max_queue_ms=0) as server:
        results = asyncio.run(_burst(server.url, 12))
        assert [status for status, _, _ in results] == [200] * 12
        metrics = httpx.get(f"{server.url}/metrics").text
    batches = _sample(metrics, 'arinext_batch_size_count{model="slow-speech"}')
    singles = _sample(metrics, 'arinext_batch_size_bucket{le="1.0",model="slow-speech"}')
    windows = _sample(metrics, 'arinext_batch_size_sum{model="slow-speech"}')
    assert windows == 13  # the warm-up request and the twelve
    assert singles < batches < windows  # requests that arrived during a batch shared the next
    if len(os.sched_getaffinity(0)) > 1:  # on several CPUs, batches have a thread of their own
        assert "the preparation thread runs the batches" not in server.log_text()


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_on_one_cpu_the_preparation_thread_runs_the_batches(
    server_factory: Callable, slow_artifact: Path
) -> None:
    """Pinned to one CPU, the server runs batches on its one preparation thread (no thread of
    the model's own), still shares them under load, runs long clips as bulk chunks, and stops
    cleanly."""
    long_clip = audio.encode_sf(audio.signal(3.0, 16000), 16000, "WAV", "PCM_16")
    cpu = min(os.sched_getaffinity(0))
    settings = {"models": slow_artifact, "queue_size": 64, "max_queue_ms": 0, "log_level": "info"}
    with server_factory(cpu=cpu, **settings) as server:
        results = asyncio.run(_burst(server.url, 12))
        assert [status for status, _, _ in results] == [200] * 12
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            answer = client.post("/classify?windows=true&hop=1", content=long_clip, headers=WAV)
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["predictions"][0]["windows"]) == 3
            metrics = client.get("/metrics").text
    # Drained and exited on SIGTERM (uvicorn re-raises it once done), not killed.
    assert server.process.returncode == -signal.SIGTERM
    assert "one CPU: the preparation thread runs the batches too" in server.log_text()
    batches = _sample(metrics, 'arinext_batch_size_count{model="slow-speech"}')
    singles = _sample(metrics, 'arinext_batch_size_bucket{le="1.0",model="slow-speech"}')
    windows = _sample(metrics, 'arinext_batch_size_sum{model="slow-speech"}')
    assert windows == 16  # the warm-up request, the twelve and the long clip's three
    assert singles < batches < windows  # requests that arrived during a batch shared the next


def _sample(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the metrics")


def _thread_cpu_ticks(pid: int) -> dict[int, int]:
    """CPU time (user + system clock ticks) of each thread of process ``pid``."""
    ticks = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # ended meanwhile
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks[int(tid)] = int(fields[11]) + int(fields[12])
    return ticks


def _can_batch_schedule() -> bool:
    """Whether :func:`batch_scheduling` applies here (tried on a thread of its own, so the test
    process keeps its policy)."""
    applied: list[bool] = []
    thread = threading.Thread(target=lambda: applied.append(batch_scheduling() is not None))
    thread.start()
    thread.join()
    return applied[0]


@pytest.mark.skipif(not _can_batch_schedule(), reason="needs Linux's SCHED_BATCH, allowed")
def test_the_threads_that_serve_requests_run_under_sched_batch_unless_turned_off(
    server_factory: Callable, speech_artifact: Path
) -> None:
    """The event loop and every thread that worked on requests are SCHED_BATCH, so an arriving
    request does not preempt a running batch, and the workers keep their nice levels below the
    loop's; ARINEXT_BATCH_SCHEDULING=false keeps the default policy. (Threads that libraries
    started at import, before the app, keep theirs.)"""
    for enabled, expected in ((True, os.SCHED_BATCH), (False, os.SCHED_OTHER)):
        with (
            server_factory(models=speech_artifact, batch_scheduling=enabled) as server,
            httpx.Client(base_url=server.url, timeout=30.0) as client,
        ):
            pid = server.process.pid
            before = _thread_cpu_ticks(pid)
            for _ in range(30):
                assert client.post("/classify", content=ONE_SECOND, headers=WAV).status_code == 200
            after = _thread_cpu_ticks(pid)
            working = [tid for tid, spent in after.items() if spent > before.get(tid, 0)]
            policies, nice = {}, {}
            for tid in [pid, *working]:
                with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                    policies[tid] = os.sched_getscheduler(tid)
                    nice[tid] = os.getpriority(os.PRIO_PROCESS, tid)
        assert len(policies) >= 2, policies  # the event loop and at least one worker
        assert set(policies.values()) == {expected}, (enabled, policies)
        loop_nice = nice.pop(pid)
        assert set(nice.values()) == {loop_nice + 5}, (loop_nice, nice)  # ARINEXT_WORKER_NICENESS


def test_sigterm_drains_then_finishes_in_flight_requests(
    server_factory: Callable, slow_artifact: Path
) -> None:
    drain = 1.5
    # 237 windows (60 s at the 0.25 s hop of long clips) of a slow model: seconds of work, to
    # outlast the drain (118 finished within it on a fast enough server).
    long_clip = audio.encode_sf(audio.signal(60.0, 16000), 16000, "WAV", "PCM_16")
    with server_factory(models=slow_artifact, drain_seconds=drain) as server:
        outcome: dict[str, object] = {}

        def in_flight() -> None:
            with httpx.Client(base_url=server.url, timeout=120.0) as client:
                outcome["long"] = client.post("/classify", content=long_clip, headers=WAV)
                outcome["answered"] = time.monotonic()

        worker = threading.Thread(target=in_flight)
        worker.start()
        time.sleep(0.3)  # the long request is being processed
        # The client is built before the signal: building one can take longer than the drain.
        with httpx.Client(base_url=server.url, timeout=10.0) as client:
            client.get("/healthz")
            signalled = time.monotonic()
            os.kill(server.process.pid, signal.SIGTERM)
            while (ready := client.get("/readyz")).status_code == 200:
                assert time.monotonic() < signalled + 10, "readyz stayed 200 after SIGTERM"
                time.sleep(0.02)
            assert ready.json()["status"] == "draining"
            # Still serving while draining: the load balancer may not have noticed yet.
            assert client.post("/classify", content=SHORT, headers=WAV).status_code == 200
        worker.join(120)
        long = outcome["long"]
        assert isinstance(long, httpx.Response) and long.status_code == 200
        assert len(long.json()["predictions"][0]["top_k"]) == 5
        # It was answered after the drain, i.e. while uvicorn was already shutting down.
        assert outcome["answered"] > signalled + drain  # type: ignore[operator]
        # uvicorn re-raises the signal once shut down, so the exit status is "killed by SIGTERM".
        assert server.process.wait(30) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.TransportError), httpx.Client(base_url=server.url) as client:
            client.get("/healthz")


def test_arinext_serve_runs_the_service_without_torch(
    server_factory: Callable, tiny_artifacts: dict[str, Path]
) -> None:
    command = [
        sys.executable,
        "-m",
        "arinext",
        "serve",
        "--no-demo",
        "--models",
        str(tiny_artifacts["epic_kitchens_100"]),
        str(tiny_artifacts["nsynth"]),
    ]
    with (
        server_factory(command) as server,
        httpx.Client(base_url=server.url, timeout=10.0) as client,
    ):
        heads = [h["head"] for h in client.get("/models").json()["heads"]]
        assert heads == ["verb", "noun", "nsynth"]
        assert client.get("/demo").status_code == 404
        response = client.post("/classify?heads=verb", content=ONE_SECOND, headers=WAV)
        assert response.status_code == 200
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
        assert "libtorch" not in maps and TEST_BACKEND in maps  # the runtime's own libraries
    assert '"POST /classify?heads=verb HTTP/1.1" 200' in server.log_text()  # the access log


def test_arinext_serve_without_the_access_log_logs_no_requests(
    server_factory: Callable, speech_artifact: Path
) -> None:
    command = [sys.executable, "-m", "arinext", "serve", "--no-demo"]
    settings = {"models": speech_artifact, "access_log": False, "log_level": "info"}
    with (
        server_factory(command, **settings) as server,
        httpx.Client(base_url=server.url, timeout=10.0) as client,
    ):
        assert client.post("/classify", content=ONE_SECOND, headers=WAV).status_code == 200
    log = server.log_text()
    assert "ready: serving heads speech_commands" in log  # info lines are still written
    assert "/classify" not in log and "/readyz" not in log


def test_a_server_without_models_stays_up_not_ready_and_logs_why(server_factory: Callable) -> None:
    with (
        server_factory(ready=False) as server,
        httpx.Client(base_url=server.url, timeout=10.0) as client,
    ):
        assert client.get("/healthz").status_code == 200
        deadline = time.monotonic() + 10
        while "no models configured" not in server.log_text():
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.05)
        readiness = client.get("/readyz")
        assert (readiness.status_code, readiness.json()["status"]) == (503, "no_models")
        refused = client.post("/classify", content=ONE_SECOND, headers=WAV)
        assert refused.status_code == 503 and refused.headers["retry-after"]
