"""Concurrent real-time streams on ``WS /stream``: how far behind real time do events arrive?

Starts a server (uvicorn, pinned to ``--server-cpus``) with ``ARINEXT_STREAM_MAX_CONCURRENT`` set
to ``--streams``, opens that many streams at once from this process (pinned to
``--client-cpus``), and sends each ``--seconds`` of 16 kHz speech-like audio at real time in
``--chunk-ms`` messages, their starts spread over one hop as independent speakers' would be
(``--aligned`` starts them together: every stream's windows then complete at the same instant).
For every window event the lag is its arrival time minus the moment the window's last sample was
due to be sent (start + window end). Once they are all open, one more stream is opened and must
be refused (close 1013 ``too_many_streams``). Windows the server dropped to keep its answers
current (``dropped`` events) are counted. Prints a markdown table.

``--find`` searches for the largest number of streams the server holds: every stream completed,
no window dropped, every event within two hops and the lag p99 at most ``--max-p99-ms``; it
doubles from ``--streams`` until a count fails, then bisects, one row per count tried.

    python benchmarks/stream_load.py [--streams 32] [--seconds 20] [--hop 0.25] [--model DIR]
    python benchmarks/stream_load.py --find --streams 50 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import websockets
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a plain checkout

from machine import cpu_model  # noqa: E402

from arinext.service.settings import EMBEDDED_MODEL_DIR  # noqa: E402

RATE = 16000
DEFAULT_MODEL = EMBEDDED_MODEL_DIR
EXAMPLES = ROOT / "service" / "examples"


@dataclass
class StreamResult:
    """One stream's window lags (seconds) and how it ended."""

    lags: list[float] = field(default_factory=list)
    dropped: int = 0
    close_code: int | None = None
    close_reason: str = ""


def _audio(seconds: float) -> bytes:
    """The bundled spoken words and silence, repeated to ``seconds``, as 16 kHz s16le."""
    import soundfile as sf

    words = [sf.read(EXAMPLES / f"{w}.wav", dtype="float32")[0] for w in ("yes", "stop")]
    pattern = np.concatenate([words[0], np.zeros(RATE // 2, np.float32), words[1]])
    reps = int(np.ceil(seconds * RATE / len(pattern)))
    samples = np.tile(pattern, reps)[: round(seconds * RATE)]
    return (samples * 32767).astype("<i2").tobytes()


async def _stream(
    url: str,
    pcm: bytes,
    hop: float,
    chunk_ms: float,
    go: asyncio.Event,
    ready: list[int],
    offset: float,
) -> StreamResult:
    result = StreamResult()
    chunk = round(chunk_ms / 1000 * RATE) * 2
    start = {"type": "start", "format": "s16le", "sample_rate": RATE, "hop": hop}
    async with websockets.connect(url, max_size=2**22, open_timeout=30, compression=None) as ws:
        await ws.send(json.dumps(start))
        assert json.loads(await ws.recv())["type"] == "ready"
        ready.append(1)
        await go.wait()
        await asyncio.sleep(offset)
        began = time.monotonic()

        async def send() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                for sent in range(0, len(pcm), chunk):
                    delay = began + sent / (2 * RATE) - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await ws.send(pcm[sent : sent + chunk])
                await ws.send(json.dumps({"type": "end"}))

        sender = asyncio.create_task(send())
        with contextlib.suppress(websockets.ConnectionClosed):  # refused: reported below
            async for message in ws:
                event = json.loads(message)
                if event["type"] == "window":
                    result.lags.append(time.monotonic() - (began + event["end"]))
                elif event["type"] == "dropped":
                    result.dropped += int(event["windows"])
        await sender
        result.close_code, result.close_reason = ws.close_code, ws.close_reason or ""
    return result


async def _refused(url: str) -> tuple[int | None, str]:
    """Open one stream too many; the close code and reason it gets."""
    async with websockets.connect(url, open_timeout=30) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for _ in ws:
                pass
        return ws.close_code, ws.close_reason or ""


async def _run(
    url: str, streams: int, seconds: float, hop: float, chunk_ms: float, aligned: bool
) -> tuple[list[StreamResult], tuple[int | None, str]]:
    pcm = _audio(seconds)
    # People do not start talking on the same sample: starts spread over one hop, unless aligned
    # (the worst case, every stream's windows completing at the same instant).
    offsets = [0.0 if aligned else i * hop / streams for i in range(streams)]
    go = asyncio.Event()
    ready: list[int] = []
    tasks = [
        asyncio.create_task(_stream(url, pcm, hop, chunk_ms, go, ready, offset))
        for offset in offsets
    ]
    while len(ready) < streams:
        if any(t.done() for t in tasks):
            await asyncio.gather(*tasks)  # raise the failure
        await asyncio.sleep(0.05)
    refusal = await _refused(url)  # every stream is open and waiting for the start signal
    go.set()
    return list(await asyncio.gather(*tasks)), refusal


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _cpus(text: str | None) -> set[int]:
    """The CPUs of a comma-separated list (none: an empty set, which means any)."""
    return {int(c) for c in text.split(",")} if text else set()


@contextlib.contextmanager
def _server(
    model: Path, streams: int, cpus: set[int] | None, settings: dict[str, str]
) -> Iterator[tuple[str, int]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARINEXT_")}
    env.update(
        ARINEXT_MODELS=str(model),
        ARINEXT_DEMO="false",
        ARINEXT_INTRA_OP_THREADS="1",
        ARINEXT_DRAIN_SECONDS="0",
        ARINEXT_STREAM_MAX_CONCURRENT=str(streams),
        PYTHONPATH=str(ROOT),
    )
    env.update({f"ARINEXT_{name.upper()}": value for name, value in settings.items()})
    command = [sys.executable, "-m", "uvicorn", "--factory", "arinext.service.app:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not become ready")
            time.sleep(0.1)
        yield base.replace("http://", "ws://") + "/stream", process.pid
    finally:
        process.terminate()
        process.wait(15)


@dataclass
class Trial:
    """One count of streams, measured."""

    streams: int
    completed: int
    windows: int
    dropped: int
    p50: float
    p99: float
    worst: float
    server_cpu: float
    client_cpu: float
    mean_batch: float
    refused: tuple[int | None, str]
    early: Counter
    examples: dict[str, str]

    def holds(self, hop_ms: float, max_p99_ms: float) -> bool:
        """Every stream answered, nothing dropped, every event within two hops, p99 in bound."""
        return (
            self.completed == self.streams
            and self.dropped == 0
            and self.worst <= 2 * hop_ms
            and self.p99 <= max_p99_ms
            and self.refused[0] == 1013
        )


def trial(args: argparse.Namespace, streams: int, server_cpus: set[int] | None) -> Trial:
    """Serve ``streams`` streams at real time on a fresh server and measure them."""
    available = os.sched_getaffinity(0)
    client_cpus = _cpus(args.client_cpus) & available or None
    with _server(args.model, streams, server_cpus, args.setting) as (url, pid):
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)
        server_cpu, client_cpu, began = _cpu_seconds(pid), time.process_time(), time.monotonic()
        results, refused = asyncio.run(
            _run(url, streams, args.seconds, args.hop, args.chunk_ms, args.aligned)
        )
        wall = time.monotonic() - began
        server_cpu = _cpu_seconds(pid) - server_cpu
        client_cpu = time.process_time() - client_cpu
        mean_batch = _mean_batch(url)
    os.sched_setaffinity(0, available)
    lags = np.concatenate([r.lags for r in results] + [np.zeros(0)]) * 1000
    lags = lags if len(lags) else np.full(1, np.nan)
    p50, p99 = np.nanpercentile(lags, [50, 99])
    early = Counter(r.close_reason.split(":")[0] for r in results if r.close_code != 1000)
    examples = {
        code: next(r.close_reason for r in results if r.close_reason.startswith(code))
        for code in early
    }
    return Trial(
        streams,
        sum(r.close_code == 1000 for r in results),
        int(np.isfinite(lags).sum()),
        sum(r.dropped for r in results),
        float(p50),
        float(p99),
        float(np.nanmax(lags)),
        100 * server_cpu / wall,
        100 * client_cpu / wall,
        mean_batch,
        refused,
        early,
        examples,
    )


def _mean_batch(stream_url: str) -> float:
    """Windows per model run over the trial, from the server's ``arinext_batch_size``."""
    base = stream_url.replace("ws://", "http://", 1).removesuffix("/stream")
    text = httpx.get(f"{base}/metrics", timeout=10).text
    totals = {"sum": 0.0, "count": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name == "arinext_batch_size":
            for sample in family.samples:
                kind = sample.name.rsplit("_", 1)[-1]
                if kind in totals:
                    totals[kind] += sample.value
    return totals["sum"] / totals["count"] if totals["count"] else float("nan")


def _row(t: Trial, hop_ms: float) -> str:
    return (
        f"| {t.streams} | {t.completed} | {t.windows} | {t.dropped} | {t.p50:.0f} | {t.p99:.0f} "
        f"| {t.worst:.0f} | {t.worst / hop_ms:.2f} | {t.mean_batch:.1f} | {t.server_cpu:.0f} "
        f"| {t.client_cpu:.0f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per stream")
    parser.add_argument("--hop", type=float, default=0.25)
    parser.add_argument("--chunk-ms", type=float, default=100.0, help="audio per message (100)")
    parser.add_argument(
        "--aligned", action="store_true", help="start every stream at once (default: one hop)"
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument(
        "--setting",
        type=_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server setting, e.g. backend=openvino or max_wait_ms=20 (repeatable)",
    )
    parser.add_argument("--server-cpus", default="0", help="comma-separated CPUs for the server")
    parser.add_argument("--client-cpus", default="1", help="comma-separated CPUs for the clients")
    parser.add_argument("--find", action="store_true", help="search for the largest count held")
    parser.add_argument("--max-p99-ms", type=float, default=100.0, help="--find's lag bound")
    parser.add_argument("--max-streams", type=int, default=1024, help="--find's upper bound")
    args = parser.parse_args(argv)
    args.setting = dict(args.setting)
    available = os.sched_getaffinity(0)
    server_cpus = _cpus(args.server_cpus) & available or None
    hop_ms = args.hop * 1000
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"server CPUs {sorted(server_cpus or available)}, client CPUs "
        f"{sorted(_cpus(args.client_cpus) & available or available)}; model {args.model.name}; "
        f"{args.seconds:g} s of audio per stream in {args.chunk_ms:g} ms messages, hop "
        f"{args.hop:g} s, starts {'aligned' if args.aligned else 'spread over one hop'}; "
        f"settings {args.setting or 'default'}"
    )
    print()
    print(
        "| streams | completed | windows | dropped | lag p50 ms | lag p99 ms | lag max ms "
        "| max in hops | windows per model run | server CPU % | client CPU % |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    if not args.find:
        t = trial(args, args.streams, server_cpus)
        print(_row(t, hop_ms))
        print()
        for code, count in sorted(t.early.items()):
            print(f"closed early: {count} streams with {code} (e.g. {t.examples[code]})")
        print(f"stream {args.streams + 1}: closed with {t.refused[0]} ({t.refused[1]})")
        within = t.worst <= 2 * hop_ms and t.completed == t.streams and t.refused[0] == 1013
        print(f"every event within 2 hops and stream {args.streams + 1} refused: {within}")
        return 0
    held, failed = 0, args.max_streams + 1
    count = args.streams
    while held + 1 < failed:
        t = trial(args, count, server_cpus)
        print(_row(t, hop_ms), flush=True)
        if t.holds(hop_ms, args.max_p99_ms):
            held = count
            count = min(2 * count, args.max_streams) if failed > args.max_streams else 0
        else:
            failed = count
            count = 0
        if count == 0 or count <= held or count >= failed:
            count = (held + failed) // 2
    print()
    print(
        f"largest held: {held} streams (every stream answered, none dropped, every event within "
        f"2 hops, lag p99 <= {args.max_p99_ms:g} ms); {failed} did not"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
