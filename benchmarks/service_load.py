"""What the HTTP service adds on top of the work itself, measured as ratios in one run.

Starts ``arinext serve`` pinned to one core (``taskset``), runs the load generator on another,
and interleaves, round by round, the same clip through:

- in-process, one thread, on the server's core: the server's own pipeline
(``arinext.service.prepare``:
  decode, resample, log-mel) and one ONNX Runtime call per clip (latency), and the same for 16
  clips with one batched call (throughput);
- HTTP ``POST /classify`` at concurrency 1 (latency) and 16 (throughput, p99/p50), driven by
  ``wrk`` (Debian package ``wrk``). The load generator must cost next to nothing, because at
  concurrency 1 every microsecond it spends is added to the latency measured: wrk, in C, spends
  tens of microseconds per request where Python clients spend 0.5 ms (http.client), 0.8 ms
  (aiohttp) or 2.4 ms (httpx) of CPU (docs/performance.md).

``--servers uvicorn,granian`` serves the app with each server named (all pinned to the same core,
idle while another is measured) and interleaves their HTTP modes in the same rounds, so each
server's ratios to the same in-process reference come from one run. ``uvicorn`` is ``arinext
serve``; ``granian`` is ``python -m granian --interface asgi --factory
arinext.service.app:create_app`` (one worker, one runtime thread), a candidate measured here and
not part of the product: it must be importable (``PYTHONPATH``), and it lacks some of ``arinext
serve``'s limits (docs/performance.md).

With ``--overload-seconds`` it then
offers 5x the measured concurrency-16 throughput for that long (open loop, with aiohttp, over a
bounded number of connections) and reports statuses, the time to a 503, the latency of accepted
requests, and the server's RSS before, right after and ``--settle-seconds`` later. ``--url``
measures an already running server instead (nothing pinned, no RSS). Prints markdown.

    python benchmarks/service_load.py [--artifact DIR] [--clip FILE] [--requests N] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import numpy as np
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a plain checkout

from arinext.service.loading import LoadedModel, load_model  # noqa: E402
from arinext.service.memory import IDLE_TRIM_SECONDS  # noqa: E402
from arinext.service.prepare import prepare  # noqa: E402
from arinext.service.settings import EMBEDDED_MODEL_DIR  # noqa: E402
from benchmarks.machine import cpu_model  # noqa: E402

logger = logging.getLogger("service_load")

DEFAULT_ARTIFACT = EMBEDDED_MODEL_DIR
DEFAULT_CLIP = REPO / "service" / "examples" / "yes.wav"
HEADERS = {"content-type": "application/octet-stream"}
BATCH = 16
# How the measured servers run: one ONNX Runtime thread, as the in-process reference.
SERVER_ENV = {"ARINEXT_INTRA_OP_THREADS": "1", "ARINEXT_LOG_LEVEL": "warning"}
SERVERS = ("uvicorn", "granian")
# granian as its documentation runs an ASGI app: one worker process, one Rust runtime thread;
# settings reach the app's factory through the ARINEXT_* environment.
GRANIAN = [
    "-m",
    "granian",
    "--interface",
    "asgi",
    "--factory",
    "--workers",
    "1",
    "--runtime-threads",
    "1",
    "--log-level",
    "warning",
    "--host",
    "127.0.0.1",
    "arinext.service.app:create_app",
]


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


@dataclass
class WrkSeries:
    """wrk's answer for one HTTP mode, over rounds: requests, seconds, per-round percentiles."""

    items: int = 0
    wall: float = 0.0
    p50s: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)
    failures: int = 0  # non-2xx answers and socket errors

    def p(self, q: float) -> float:
        """p50: the median of the rounds' p50s; p99: the worst round's p99 (milliseconds)."""
        if q == 50:
            return float(np.median(self.p50s)) if self.p50s else 0.0
        return max(self.p99s, default=0.0)

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.items / self.wall if self.wall > 0 else 0.0


# Reads the clip named by ARINEXT_BENCH_CLIP, POSTs it, and prints one JSON line when done.
WRK_SCRIPT = r"""
local f = assert(io.open(os.getenv("ARINEXT_BENCH_CLIP"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "failures": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def _wrk(url: str, clip: Path, concurrency: int, seconds: float, out: WrkSeries) -> None:
    """One wrk run (one thread, ``concurrency`` connections) added to ``out``."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "-s", script.name]
        env = {**os.environ, "ARINEXT_BENCH_CLIP": str(clip.resolve())}
        done = subprocess.run(
            [*command, f"{url}/classify"], capture_output=True, text=True, env=env, check=True
        )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    out.items += result["requests"]
    out.wall += result["duration_us"] / 1e6
    out.p50s.append(result["p50_us"] / 1000)
    out.p99s.append(result["p99_us"] / 1000)
    out.failures += result["failures"]


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


async def _post(session: aiohttp.ClientSession, clip: bytes) -> tuple[int, float, str, bool]:
    """One ``POST /classify``: (status, seconds, start of the body, has Retry-After).

    The seconds run from the moment the request has a connection (see :func:`_session`): time
    spent waiting for one of the client's own connections is not the server's.
    """
    key = object()
    async with session.post(
        "/classify", data=clip, headers=HEADERS, trace_request_ctx=key
    ) as response:
        body = await response.read()
        began = _CONNECTED.pop(key, None)
        return (
            response.status,
            time.perf_counter() - began if began is not None else float("nan"),
            body[:200].decode(errors="replace"),
            "Retry-After" in response.headers,
        )


# trace_request_ctx -> when that request got its connection (new or reused).
_CONNECTED: dict[object, float] = {}


async def _connected(session: object, context: object, params: object) -> None:
    _CONNECTED[context.trace_request_ctx] = time.perf_counter()  # type: ignore[attr-defined]


def _session(url: str, connections: int, timeout: float) -> aiohttp.ClientSession:
    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(_connected)
    trace.on_connection_reuseconn.append(_connected)
    return aiohttp.ClientSession(
        url,
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=timeout),
        trace_configs=[trace],
    )


async def _overload(
    url: str, clip: bytes, rate: float, seconds: float, connections: int
) -> tuple[Series, Series]:
    """Open-loop load at ``rate`` req/s over at most ``connections`` connections: (accepted,
    refused). Requests the client could not even start (every connection busy for the whole
    backlog) are counted under status 0 instead of piling up without bound."""
    accepted, refused = Series(), Series()
    backlog = connections * 4
    async with _session(url, connections, 60) as session:
        pending: set[asyncio.Task] = set()

        async def one() -> None:
            try:
                status, spent, _, retry_after = await _post(session, clip)
            except (aiohttp.ClientError, TimeoutError):
                refused.statuses[-1] = refused.statuses.get(-1, 0) + 1
                return
            target = accepted if status == 200 else refused
            target.statuses[status] = target.statuses.get(status, 0) + 1
            if status in (200, 503):
                target.latencies.append(spent)
            if status == 503 and not retry_after:
                logger.warning("503 without Retry-After")

        began = time.perf_counter()
        sent = 0
        while (elapsed := time.perf_counter() - began) < seconds:
            while sent < elapsed * rate:
                sent += 1
                if len(pending) >= backlog:
                    refused.statuses[0] = refused.statuses.get(0, 0) + 1
                    continue
                task = asyncio.create_task(one())
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.sleep(0.002)
        await asyncio.gather(*pending)
        accepted.wall = refused.wall = time.perf_counter() - began
    return accepted, refused


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def _server(
    artifact: Path,
    core: int | None,
    settings: dict[str, str],
    root: Path = REPO,
    server: str = "uvicorn",
) -> Iterator[tuple]:
    """``arinext serve`` (or granian, see the module's docstring) of checkout ``root`` with one
    ONNX Runtime thread: (url, pid of the process started)."""
    env = {**SERVER_ENV, "ARINEXT_DEMO": "false"}
    env.update({f"ARINEXT_{k.upper()}": v for k, v in settings.items()})
    if server == "granian":
        command = [sys.executable, *GRANIAN]
        env["ARINEXT_MODELS"] = str(artifact)
    else:
        command = [sys.executable, "-m", "arinext", "serve", "--no-demo", "--models", str(artifact)]
    with _process(command, core, env, "/readyz", root) as running:
        yield running


@contextlib.contextmanager
def _process(
    command: list[str],
    core: int | None,
    env: dict[str, str],
    ready_path: str | None,
    root: Path = REPO,
) -> Iterator[tuple]:
    """Run a server from checkout ``root`` on a free port (pinned to ``core``) until it
    answers: (url, pid)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [*command, "--port", str(port)]
    if core is not None:
        command = ["taskset", "-c", str(core), *command]
    # The checkout first; what PYTHONPATH already names (granian outside the venv) after it.
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen(command, env={**os.environ, **env, "PYTHONPATH": path}, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):
                if ready_path is None:
                    answer = httpx.post(f"{url}/classify", content=b"x", timeout=5)
                else:
                    answer = httpx.get(f"{url}{ready_path}", timeout=5)
                if answer.status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not become ready")
            time.sleep(0.2)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(60)


def _run_rounds(
    urls: dict[str, str], model, clip, args, server_cores, load_cores
) -> tuple[Series, Series, dict[str, tuple[WrkSeries, WrkSeries]]]:
    """In-process modes, then each server's concurrency 1 and 16, round after round:
    (single, batched, {server: (concurrency 1, concurrency 16)})."""
    single, batched = Series(), Series()
    http = {name: (WrkSeries(), WrkSeries()) for name in urls}
    clip_bytes = clip.read_bytes()

    async def warm_up(url: str) -> None:
        async with _session(url, 1, 300) as client:
            for _ in range(args.warmup):
                status, _, text, _ = await _post(client, clip_bytes)
                if status != 200:
                    raise RuntimeError(f"warm-up request answered {status}: {text}")

    for url in urls.values():
        asyncio.run(warm_up(url))
    per_round = max(1, args.requests // args.rounds)
    for _ in range(args.rounds):
        _pin(server_cores)  # the in-process pipeline runs where the server runs
        _in_process(model, clip_bytes, per_round, single, batched)
        _pin(load_cores)  # wrk inherits this affinity
        for name, url in urls.items():
            _wrk(url, clip, 1, args.seconds, http[name][0])
            _wrk(url, clip, BATCH, args.seconds, http[name][1])
    return single, batched, http


def _servers(value: str) -> Sequence[str]:
    names = [name.strip() for name in value.split(",")]
    if not names or any(name not in SERVERS for name in names) or len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"a comma-separated list of distinct {', '.join(SERVERS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT, help="model to serve")
    parser.add_argument("--url", help="measure this running server instead of starting one")
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="audio file to send")
    parser.add_argument(
        "--requests", type=int, default=400, help="in-process clips per mode, over all rounds"
    )
    parser.add_argument("--seconds", type=float, default=5, help="wrk seconds per mode and round")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured requests first")
    parser.add_argument("--server-core", type=int, default=0, help="core for the server")
    parser.add_argument("--load-core", type=int, default=1, help="core for this process")
    parser.add_argument(
        "--servers",
        type=_servers,
        default=["uvicorn"],
        help="servers to measure, interleaved: uvicorn (arinext serve), granian",
    )
    parser.add_argument("--overload-seconds", type=float, default=0, help="5x overload phase")
    parser.add_argument("--settle-seconds", type=float, default=60, help="RSS check after it")
    parser.add_argument(
        "--connections",
        type=int,
        default=128,
        help="client connections then (512: more than the server's limit of 256)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request

    pinned = args.url is None and (os.cpu_count() or 1) >= 2
    server_cores = {args.server_core} if pinned else None
    load_cores = {args.load_core} if pinned else None
    if shutil.which("wrk") is None:
        parser.error("the HTTP modes need wrk (Debian: apt-get install wrk)")
    clip = args.clip.read_bytes()
    _pin(server_cores)
    # As the server's lifespan does: on one pinned core, OpenBLAS threads spinning beside the
    # pipeline made the in-process reference 3-20x slower on a busy machine, which flattered
    # the ratios.
    threadpool_limits(limits=1, user_api="blas")
    model = load_model(args.artifact, intra_op_threads=1)
    core = args.server_core if pinned else None
    with contextlib.ExitStack() as stack:
        if args.url is None:
            started = {
                name: stack.enter_context(_server(args.artifact, core, {}, server=name))
                for name in args.servers
            }
            urls = {name: url for name, (url, _) in started.items()}
            url, pid = started[args.servers[0]]  # the first one takes the overload
        else:
            urls = {"uvicorn": args.url}
            url, pid = args.url, None
        s, b, http = _run_rounds(urls, model, args.clip, args, server_cores, load_cores)
        h16 = http[next(iter(urls))][1]
        overload = None
        if args.overload_seconds > 0:
            _pin(load_cores)
            if pid:  # the idle server gives freed memory back: "before" is trimmed too
                time.sleep(IDLE_TRIM_SECONDS + 2)
            before = _rss_mb(pid) if pid else float("nan")
            offered = 5 * h16.rate
            accepted, refused = asyncio.run(
                _overload(url, clip, offered, args.overload_seconds, args.connections)
            )
            after = _rss_mb(pid) if pid else float("nan")
            time.sleep(args.settle_seconds)
            settled = _rss_mb(pid) if pid else float("nan")
            overload = (offered, accepted, refused, before, after, settled)

    print(f"# Service load: {args.artifact.name}, clip {args.clip.name} ({len(clip)} bytes)")
    print()
    print(f"- machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    where = f"server on core {args.server_core}, load on core {args.load_core}"
    print(f"- {where if pinned else 'not pinned'}; ONNX Runtime intra-op threads 1")
    print(
        f"- {args.rounds} interleaved rounds: in-process {args.requests} clips per mode; HTTP "
        f"with wrk (1 thread), {args.seconds:g} s per mode and round"
        + (f"; servers {', '.join(urls)}" if len(urls) > 1 else "")
    )
    print()
    print("| mode | items | p50 ms | p99 ms | items/s |")
    print("|---|---|---|---|---|")
    # "HTTP" alone when only arinext serve runs, as the figures in the docs quote it.
    labels = {name: "HTTP" if len(urls) == 1 else f"HTTP {name}" for name in urls}
    rows: list[tuple[str, Series | WrkSeries]] = [
        ("in-process, one clip per call", s),
        (f"in-process, {BATCH} clips per call", b),
    ]
    for name, (h1, h16) in http.items():
        rows += [
            (f"{labels[name]}, concurrency 1", h1),
            (f"{labels[name]}, concurrency {BATCH}", h16),
        ]
    for name, row in rows:
        timed = row is not b  # the batched in-process mode times whole calls, not clips
        p50 = f"{row.p(50):.2f}" if timed else "-"
        p99 = f"{row.p(99):.2f}" if timed else "-"
        print(f"| {name} | {row.items} | {p50} | {p99} | {row.rate:.1f} |")
    for name, (h1, h16) in http.items():
        label = labels[name]
        print()
        print(
            f"- concurrency 1: {label} p50 / in-process p50 = {h1.p(50) / s.p(50):.2f} "
            "(target <= 1.3)"
        )
        print(
            f"- concurrency {BATCH}: {label} throughput / in-process batched = "
            f"{h16.rate / b.rate:.2f} (target >= 0.9); {label} p99 / p50 = "
            f"{h16.p(99) / h16.p(50):.2f} (target <= 3)"
        )
        print(f"- non-200 answers in the measured modes: {h1.failures + h16.failures}")
    if overload is not None:
        offered, accepted, refused, before, after, settled = overload
        codes = sorted((accepted.statuses | refused.statuses).items())
        print()
        print(f"## Overload: {offered:.0f} req/s offered for {args.overload_seconds:g} s")
        print()
        names = {0: "not sent (client backlog full)", -1: "client error or timeout"}
        print(f"- statuses: {', '.join(f'{names.get(code, code)}: {n}' for code, n in codes)}")
        batch_ms = b.wall / max(1, b.items // BATCH) * 1000
        bound = float(os.environ.get("ARINEXT_MAX_QUEUE_MS", "1000")) + batch_ms
        print(
            f"- accepted (200): p50 {accepted.p(50):.1f} ms, p99 {accepted.p(99):.1f} ms "
            f"(target <= queue-time bound + one batch = {bound:.0f} ms)"
        )
        print(f"- refused (503): p50 {refused.p(50):.1f} ms, p99 {refused.p(99):.1f} ms")
        print(
            f"- server RSS: {before:.0f} MB before, {after:.0f} MB right after, "
            f"{settled:.0f} MB {args.settle_seconds:g} s later "
            f"({(settled / before - 1) * 100:+.1f}%, target within 10%)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
