"""benchmarks/service_load.py runs against a real server and prints its markdown table."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.service.conftest import REPO


def test_load_benchmark_prints_the_table(server_factory: Callable, speech_artifact: Path) -> None:
    with server_factory(models=speech_artifact) as server:
        result = subprocess.run(
            [
                sys.executable,
                str(REPO / "benchmarks" / "service_load.py"),
                "--url",
                server.url,
                "--requests",
                "4",
                "--concurrency",
                "1,4",
                "--warmup",
                "1",
                "--artifact",
                str(speech_artifact),
                "--threads",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "| mode | concurrency | requests | errors | p50 ms | p95 ms | p99 ms | req/s |" in lines
    rows = [line for line in lines if line.startswith("| HTTP") or line.startswith("| ONNX")]
    assert [row.split(" | ")[1] for row in rows] == ["1", "4", "1"]
    assert all(row.split(" | ")[3] == "0" for row in rows)  # no errors
    assert "- model: tiny-speech-commands" in result.stdout
