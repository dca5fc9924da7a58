"""Load test of a running service, next to the raw ONNX Runtime cost of the same clip.

Sends ``--requests`` classifications of one clip at each concurrency (default 1, 4, 16) and
reports latency percentiles and throughput; with ``--artifact DIR`` it also times the same clip
through the service's own decoding, front-end and ONNX Runtime in this process, with no HTTP and
no batching, so the table shows what the server adds. Prints a markdown table.

    python benchmarks/service_load.py --url http://127.0.0.1:8000 \
        [--clip FILE] [--requests N] [--artifact DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from model.frontend import clip_view
from service.decoding import decode_audio, resample
from service.inference import load_model
from service.predict import window_starts

logger = logging.getLogger("service_load")

DEFAULT_CLIP = Path(__file__).resolve().parents[1] / "service" / "examples" / "yes.wav"
HEADERS = {"content-type": "application/octet-stream"}


@dataclass
class Row:
    """One line of the result table."""

    mode: str
    concurrency: int
    latencies: list[float]
    errors: int
    wall: float

    def cells(self) -> list[str]:
        ms = np.asarray(self.latencies) * 1000
        p50, p95, p99 = np.percentile(ms, [50, 95, 99]) if len(ms) else (np.nan,) * 3
        rate = len(self.latencies) / self.wall if self.wall > 0 else float("nan")
        return [
            self.mode,
            str(self.concurrency),
            str(len(self.latencies) + self.errors),
            str(self.errors),
            f"{p50:.1f}",
            f"{p95:.1f}",
            f"{p99:.1f}",
            f"{rate:.1f}",
        ]


async def _http_level(
    client: httpx.AsyncClient, clip: bytes, concurrency: int, requests: int
) -> Row:
    remaining = requests
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            response = await client.post("/classify", content=clip, headers=HEADERS)
            if response.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1
                logger.warning("HTTP %d: %s", response.status_code, response.text[:200])

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Row("HTTP POST /classify", concurrency, latencies, errors, time.perf_counter() - started)


async def _http_rows(
    url: str, clip: bytes, levels: list[int], requests: int, warmup: int
) -> tuple[list[Row], list[dict]]:
    limits = httpx.Limits(max_connections=max(levels), max_keepalive_connections=max(levels))
    async with httpx.AsyncClient(base_url=url, timeout=300.0, limits=limits) as client:
        heads = (await client.get("/models")).raise_for_status().json()["heads"]
        for _ in range(warmup):
            (await client.post("/classify", content=clip, headers=HEADERS)).raise_for_status()
        rows = [await _http_level(client, clip, level, requests) for level in levels]
    return rows, heads


def _direct_row(artifact: Path, clip: bytes, requests: int, threads: int) -> Row:
    """Decode + resample + log-mel + one ONNX Runtime call per clip, sequentially."""
    model = load_model(artifact, intra_op_threads=threads)
    cfg = model.manifest.frontend
    latencies = []
    started_all = time.perf_counter()
    for _ in range(requests):
        started = time.perf_counter()
        audio = decode_audio(clip, 3600.0)
        samples = resample(audio.samples, audio.sample_rate, cfg.sample_rate)
        starts = window_starts(len(samples), cfg)
        views = np.stack([clip_view(samples, s, cfg) for s in starts])[:, None]
        model.run(views)
        latencies.append(time.perf_counter() - started)
    wall = time.perf_counter() - started_all
    return Row("ONNX Runtime direct (decode + front-end + inference)", 1, latencies, 0, wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="base URL of a running server")
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="audio file to send")
    parser.add_argument("--requests", type=int, default=50, help="requests per concurrency level")
    parser.add_argument(
        "--concurrency", default="1,4,16", help="comma-separated levels (default 1,4,16)"
    )
    parser.add_argument("--artifact", type=Path, help="also time this artifact in-process")
    parser.add_argument(
        "--threads", type=int, default=0, help="ONNX Runtime intra-op threads for --artifact"
    )
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured requests first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request

    clip = args.clip.read_bytes()
    audio = decode_audio(clip, 3600.0)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    rows, heads = asyncio.run(_http_rows(args.url, clip, levels, args.requests, args.warmup))
    if args.artifact is not None:
        _direct_row(args.artifact, clip, args.warmup, args.threads)  # warm-up, discarded
        rows.append(_direct_row(args.artifact, clip, args.requests, args.threads))

    models = sorted({(h["model"], h["architecture"], h["sha256"][:12]) for h in heads})
    print(f"# Service load: {args.url}")
    print()
    print(
        f"- clip: {args.clip.name}, {audio.duration:.2f} s, {audio.sample_rate} Hz, "
        f"{audio.channels} ch, {len(clip)} bytes"
    )
    for name, architecture, sha in models:
        print(f"- model: {name} ({architecture}, sha256 {sha}...)")
    print(f"- heads: {', '.join(h['head'] for h in heads)}")
    print(
        f"- client machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )
    if args.artifact is not None:
        print(f"- direct: {args.artifact}, intra-op threads {args.threads or 'ORT default'}")
    print()
    header = ["mode", "concurrency", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "req/s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
