"""What the side-door tests watch on a running server: /healthz latency and RSS."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

MB = 1 << 20


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@dataclass
class Watch:
    """Slowest /healthz answer (seconds) and largest RSS growth (MB) seen while watching."""

    slowest_healthz: float = 0.0
    rss_growth_mb: float = 0.0
    failures: list[str] = field(default_factory=list)


@contextlib.contextmanager
def watch(url: str, pid: int, period: float = 0.05) -> Iterator[Watch]:
    """Poll ``/healthz`` and the RSS of ``pid`` every ``period`` s while the block runs."""
    seen = Watch()
    start = rss_mb(pid)
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=url, timeout=5.0) as client:
            while not stop.is_set():
                began = time.perf_counter()
                try:
                    status = client.get("/healthz").status_code
                except httpx.HTTPError as exc:
                    seen.failures.append(repr(exc))
                    status = 200
                seen.slowest_healthz = max(seen.slowest_healthz, time.perf_counter() - began)
                if status != 200:
                    seen.failures.append(f"healthz {status}")
                with contextlib.suppress(OSError, AssertionError):
                    seen.rss_growth_mb = max(seen.rss_growth_mb, rss_mb(pid) - start)
                stop.wait(period)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(10)
