"""What the HTTP service adds on top of the work itself, measured as ratios in one run.

Starts ``arinext serve`` pinned to one core (``taskset``), pins this load generator to another,
and interleaves, round by round, the same clip through:

- in-process, one thread, on the server's core: the server's own pipeline (``service.prepare``:
  decode, resample, log-mel) and one ONNX Runtime call per clip (latency), and the same for 16
  clips with one batched call (throughput);
- HTTP ``POST /classify`` at concurrency 1 (latency) and 16 (throughput, p99/p50).

With ``--overload-seconds`` it then offers 5x the measured concurrency-16 throughput for that
long (open loop, bounded loopback) and reports statuses, the time to a 503, the latency of
accepted requests, and the server's RSS before, right after and ``--settle-seconds`` later.
``--url`` measures an already running server instead (nothing pinned, no RSS). Prints markdown.

    python benchmarks/service_load.py [--artifact DIR] [--clip FILE] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a plain checkout

from benchmarks.machine import cpu_model  # noqa: E402
from service.inference import LoadedModel, load_model  # noqa: E402
from service.prepare import prepare  # noqa: E402
from service.settings import EMBEDDED_MODEL_DIR  # noqa: E402

logger = logging.getLogger("service_load")

DEFAULT_ARTIFACT = EMBEDDED_MODEL_DIR
DEFAULT_CLIP = REPO / "service" / "examples" / "yes.wav"
HEADERS = {"content-type": "application/octet-stream"}
BATCH = 16


@dataclass
class Series:
    """Latencies (seconds) and wall time of one measured mode, summed over rounds."""

    latencies: list[float] = field(default_factory=list)
    items: int = 0
    wall: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)

    def p(self, q: float) -> float:
        """The q-th percentile latency in milliseconds."""
        return float(np.percentile(np.asarray(self.latencies) * 1000, q)) if self.latencies else 0

    @property
    def rate(self) -> float:
        """Items per second."""
        return self.items / self.wall if self.wall > 0 else 0.0


def _pin(cores: set[int] | None) -> None:
    if cores is not None:
        os.sched_setaffinity(0, cores)


def _in_process(model: LoadedModel, clip: bytes, requests: int, single: Series, batch: Series):
    cfg = model.manifest.frontend
    started = time.perf_counter()
    for _ in range(requests):
        began = time.perf_counter()
        views = prepare(clip, [cfg], max_seconds=3600).inputs[0].views
        model.run(views)
        single.latencies.append(time.perf_counter() - began)
    single.wall += time.perf_counter() - started
    single.items += requests
    for _ in range(max(1, requests // BATCH)):
        began = time.perf_counter()
        views = np.concatenate(
            [prepare(clip, [cfg], max_seconds=3600).inputs[0].views for _ in range(BATCH)]
        )
        model.run(views)
        batch.wall += time.perf_counter() - began
        batch.items += BATCH


async def _http(client: httpx.AsyncClient, clip: bytes, concurrency: int, requests: int, out):
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            began = time.perf_counter()
            response = await client.post("/classify", content=clip, headers=HEADERS)
            out.statuses[response.status_code] = out.statuses.get(response.status_code, 0) + 1
            if response.status_code == 200:
                out.latencies.append(time.perf_counter() - began)
                out.items += 1
            else:
                logger.warning("HTTP %d: %s", response.status_code, response.text[:200])

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    out.wall += time.perf_counter() - began


async def _overload(url: str, clip: bytes, rate: float, seconds: float) -> tuple[Series, Series]:
    """Open-loop load at ``rate`` req/s: (accepted, refused) series."""
    accepted, refused = Series(), Series()
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one() -> None:
            began = time.perf_counter()
            try:
                response = await client.post("/classify", content=clip, headers=HEADERS)
            except httpx.HTTPError:
                refused.statuses[0] = refused.statuses.get(0, 0) + 1
                return
            spent = time.perf_counter() - began
            target = accepted if response.status_code == 200 else refused
            target.statuses[response.status_code] = target.statuses.get(response.status_code, 0) + 1
            if response.status_code in (200, 503):
                target.latencies.append(spent)
            if response.status_code == 503 and "retry-after" not in response.headers:
                logger.warning("503 without Retry-After")

        tasks = []
        began = time.perf_counter()
        sent = 0
        while (elapsed := time.perf_counter() - began) < seconds:
            while sent < elapsed * rate:
                tasks.append(asyncio.create_task(one()))
                sent += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
        accepted.wall = refused.wall = time.perf_counter() - began
    return accepted, refused


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def _server(artifact: Path, core: int | None, settings: dict[str, str]) -> Iterator[tuple]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "arinext", "serve", "--no-demo", "--models", str(artifact)]
    command += ["--port", str(port)]
    if core is not None:
        command = ["taskset", "-c", str(core), *command]
    env = {**os.environ, "ARINEXT_INTRA_OP_THREADS": "1", "ARINEXT_LOG_LEVEL": "warning"}
    env.update({f"ARINEXT_{k.upper()}": v for k, v in settings.items()})
    env["PYTHONPATH"] = str(REPO)
    process = subprocess.Popen(command, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.2)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(60)


async def _run_rounds(url, model, clip, args, server_cores, load_cores) -> dict[str, Series]:
    series = {name: Series() for name in ("single", "batched", "http1", "http16")}
    limits = httpx.Limits(max_connections=BATCH, max_keepalive_connections=BATCH)
    async with httpx.AsyncClient(base_url=url, timeout=300.0, limits=limits) as client:
        for _ in range(args.warmup):
            (await client.post("/classify", content=clip, headers=HEADERS)).raise_for_status()
        per_round = max(1, args.requests // args.rounds)
        for _ in range(args.rounds):
            _pin(server_cores)  # the in-process pipeline runs where the server runs
            _in_process(model, clip, per_round, series["single"], series["batched"])
            _pin(load_cores)
            await _http(client, clip, 1, per_round, series["http1"])
            await _http(client, clip, BATCH, per_round * 2, series["http16"])
    return series


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT, help="model to serve")
    parser.add_argument("--url", help="measure this running server instead of starting one")
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="audio file to send")
    parser.add_argument("--requests", type=int, default=400, help="per mode, over all rounds")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured requests first")
    parser.add_argument("--server-core", type=int, default=0, help="core for the server")
    parser.add_argument("--load-core", type=int, default=1, help="core for this process")
    parser.add_argument("--overload-seconds", type=float, default=0, help="5x overload phase")
    parser.add_argument("--settle-seconds", type=float, default=60, help="RSS check after it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request

    pinned = args.url is None and (os.cpu_count() or 1) >= 2
    server_cores = {args.server_core} if pinned else None
    load_cores = {args.load_core} if pinned else None
    clip = args.clip.read_bytes()
    _pin(server_cores)
    model = load_model(args.artifact, intra_op_threads=1)
    with contextlib.ExitStack() as stack:
        if args.url is None:
            url, pid = stack.enter_context(
                _server(args.artifact, args.server_core if pinned else None, {})
            )
        else:
            url, pid = args.url, None
        series = asyncio.run(_run_rounds(url, model, clip, args, server_cores, load_cores))
        overload = None
        if args.overload_seconds > 0:
            _pin(load_cores)
            before = _rss_mb(pid) if pid else float("nan")
            offered = 5 * series["http16"].rate
            accepted, refused = asyncio.run(_overload(url, clip, offered, args.overload_seconds))
            after = _rss_mb(pid) if pid else float("nan")
            time.sleep(args.settle_seconds)
            settled = _rss_mb(pid) if pid else float("nan")
            overload = (offered, accepted, refused, before, after, settled)

    s, b, h1, h16 = (series[k] for k in ("single", "batched", "http1", "http16"))
    print(f"# Service load: {args.artifact.name}, clip {args.clip.name} ({len(clip)} bytes)")
    print()
    print(f"- machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    where = f"server on core {args.server_core}, load on core {args.load_core}"
    print(f"- {where if pinned else 'not pinned'}; ONNX Runtime intra-op threads 1")
    print(f"- {args.rounds} interleaved rounds, {args.requests} requests per mode")
    print()
    print("| mode | items | p50 ms | p99 ms | items/s |")
    print("|---|---|---|---|---|")
    rows = [
        ("in-process, one clip per call", s),
        (f"in-process, {BATCH} clips per call", b),
        ("HTTP, concurrency 1", h1),
        (f"HTTP, concurrency {BATCH}", h16),
    ]
    for name, row in rows:
        p50 = f"{row.p(50):.2f}" if row.latencies else "-"
        p99 = f"{row.p(99):.2f}" if row.latencies else "-"
        print(f"| {name} | {row.items} | {p50} | {p99} | {row.rate:.1f} |")
    print()
    print(f"- concurrency 1: HTTP p50 / in-process p50 = {h1.p(50) / s.p(50):.2f} (target <= 1.3)")
    print(
        f"- concurrency {BATCH}: HTTP throughput / in-process batched = {h16.rate / b.rate:.2f} "
        f"(target >= 0.9); HTTP p99 / p50 = {h16.p(99) / h16.p(50):.2f} (target <= 3)"
    )
    errors = sum(n for code, n in (h1.statuses | h16.statuses).items() if code != 200)
    print(f"- non-200 answers in the measured modes: {errors}")
    if overload is not None:
        offered, accepted, refused, before, after, settled = overload
        codes = sorted((accepted.statuses | refused.statuses).items())
        print()
        print(f"## Overload: {offered:.0f} req/s offered for {args.overload_seconds:g} s")
        print()
        print(f"- statuses: {', '.join(f'{code}: {n}' for code, n in codes)}")
        print(f"- accepted (200): p50 {accepted.p(50):.1f} ms, p99 {accepted.p(99):.1f} ms")
        print(f"- refused (503): p50 {refused.p(50):.1f} ms, p99 {refused.p(99):.1f} ms")
        print(
            f"- server RSS: {before:.0f} MB before, {after:.0f} MB right after, "
            f"{settled:.0f} MB {args.settle_seconds:g} s later"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
