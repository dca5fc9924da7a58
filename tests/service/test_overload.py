"""Sustained overload against a real server process (issue 16, criterion 6).

For 15 s an open-loop client offers five times what the server just measured it can serve,
over a bounded number of loopback connections. Every answer must be 200 or 503 with
Retry-After; an accepted request must not wait longer than the configured queue-time bound plus
one batch (the admission rule's promise); and 25 s later (the server trims its heap after 10 s
idle) its memory must be back within 10 % of where it was before the load.

Latency is timed from the moment the client has a connection for the request, so time spent
waiting for one of its own connections is not blamed on the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from arinext.service.memory import IDLE_TRIM_SECONDS
from tests.service import audio

OVERLOAD_SECONDS = 15.0
SETTLE_SECONDS = IDLE_TRIM_SECONDS + 15.0  # the idle server has trimmed its heap by then
QUEUE_MS = 500.0
CONNECTIONS = 64
CLIP = audio.encode_sf(audio.signal(1.0, 16000), 16000, "WAV", "PCM_16")
HEADERS = {"content-type": "audio/wav"}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _tracer(started: dict[object, float]) -> aiohttp.TraceConfig:
    """Marks when each request has its connection (new or reused)."""
    trace = aiohttp.TraceConfig()

    async def connected(session: object, context: object, params: object) -> None:
        started[context.trace_request_ctx] = time.perf_counter()  # type: ignore[attr-defined]

    trace.on_connection_create_end.append(connected)
    trace.on_connection_reuseconn.append(connected)
    return trace


async def _post(session: aiohttp.ClientSession, started: dict[object, float]) -> tuple:
    """(status, seconds since the connection was had, has Retry-After)."""
    key = object()
    async with session.post(
        "/classify", data=CLIP, headers=HEADERS, trace_request_ctx=key
    ) as response:
        await response.read()
        spent = time.perf_counter() - started.pop(key)
        return response.status, spent, "Retry-After" in response.headers


async def _capacity(url: str, seconds: float) -> float:
    """Requests per second answered 200 by 16 closed-loop clients (a 503 is possible when the
    machine is busy: the queue-time bound then counts fewer requests; only 200s count)."""
    started: dict[object, float] = {}
    done = 0
    async with aiohttp.ClientSession(url, trace_configs=[_tracer(started)]) as session:
        end = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal done
            while time.perf_counter() < end:
                status, _, _ = await _post(session, started)
                assert status in (200, 503), status
                done += status == 200

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(16)))
        return done / (time.perf_counter() - began)


async def _overload(url: str, rate: float, seconds: float) -> list[tuple]:
    started: dict[object, float] = {}
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        url, connector=connector, timeout=timeout, trace_configs=[_tracer(started)]
    ) as session:
        tasks = []
        began = time.perf_counter()
        while (elapsed := time.perf_counter() - began) < seconds:
            while len(tasks) < elapsed * rate:
                tasks.append(asyncio.create_task(_post(session, started)))
            await asyncio.sleep(0.005)
        return await asyncio.gather(*tasks)


def _batch_seconds(url: str) -> float:
    """What one full batch (16 windows) takes: a 4 s clip scanned every 0.2 s, its inference
    time scaled to 16 windows; the slowest of three."""
    long_clip = audio.encode_sf(audio.signal(4.0, 16000), 16000, "WAV", "PCM_16")

    async def once() -> float:
        async with aiohttp.ClientSession(url) as session:
            params = {"hop": "0.2", "windows": "true"}
            async with session.post(
                "/classify", data=long_clip, headers=HEADERS, params=params
            ) as r:
                answer = await r.json()
        windows = len(answer["predictions"][0]["windows"])
        return answer["timing_ms"]["inference"] / 1000 * 16 / windows

    return max(asyncio.run(once()) for _ in range(3))


@pytest.mark.alone  # its bounds are the server's, not those of a machine shared with other tests
@pytest.mark.slow
def test_five_times_overload_answers_200_or_503_in_bounded_time_and_memory_returns(
    server_factory: Callable, slow_artifact: Path
) -> None:
    with server_factory(models=slow_artifact, max_queue_ms=QUEUE_MS) as server:
        pid = server.process.pid
        capacity = asyncio.run(_capacity(server.url, 3.0))
        batch = _batch_seconds(server.url)
        before = _rss_mb(pid)
        results = asyncio.run(_overload(server.url, 5 * capacity, OVERLOAD_SECONDS))
        time.sleep(SETTLE_SECONDS)
        settled = _rss_mb(pid)

    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert statuses.count(503) > 0  # the excess was refused, not queued without bound
    assert all(retry for status, _, retry in results if status == 503)
    refused = np.array([spent for status, spent, _ in results if status == 503])
    assert np.percentile(refused, 99) < 0.1  # refused at once, not after waiting in line
    accepted = np.array([spent for status, spent, _ in results if status == 200])
    p99 = float(np.percentile(accepted, 99))
    assert p99 <= QUEUE_MS / 1000 + batch, (p99, batch)
    assert settled <= before * 1.10, (before, settled)
