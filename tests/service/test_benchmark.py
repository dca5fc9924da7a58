"""The benchmarks run end to end on small inputs and print what the docs quote."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.conftest import REPO, server_env


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (Debian package wrk)")
def test_load_benchmark_prints_the_ratios_the_docs_quote(speech_artifact: Path) -> None:
    command = [sys.executable, str(REPO / "benchmarks" / "service_load.py")]
    command += ["--artifact", str(speech_artifact), "--requests", "16", "--rounds", "2"]
    command += ["--seconds", "1"]
    command += ["--warmup", "1", "--overload-seconds", "1", "--settle-seconds", "0"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=server_env(), cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "| mode | items | p50 ms | p99 ms | items/s |" in out
    rows = [line for line in out.splitlines() if line.startswith(("| in-process", "| HTTP"))]
    counts = [int(row.split(" | ")[1]) for row in rows]
    assert counts[:2] == [16, 32] and min(counts[2:]) > 0  # HTTP: what wrk sent in 2 x 1 s
    assert "- concurrency 1: HTTP p50 / in-process p50 = " in out
    assert "- concurrency 16: HTTP throughput / in-process batched = " in out
    assert "- non-200 answers in the measured modes: 0" in out
    assert "server on core 0, load on core 1" in out
    overload = out[out.index("## Overload") :]
    statuses = overload.splitlines()[2]
    # The server's answers; "not sent (client backlog full)" is the load generator's own count.
    answered = {
        part.split(":")[0]
        for part in statuses.removeprefix("- statuses: ").split(", ")
        if not part.startswith("not sent")
    }
    assert statuses.startswith("- statuses: ") and answered <= {"200", "503"}, statuses


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (Debian package wrk)")
@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs a git checkout")
def test_ab_benchmark_serves_a_revision_beside_the_working_tree(speech_artifact: Path) -> None:
    command = [sys.executable, str(REPO / "benchmarks" / "service_ab.py"), "--base", "HEAD"]
    command += ["--artifact", str(speech_artifact), "--rounds", "1", "--seconds", "1"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=server_env(), cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert f"working tree against HEAD ({head})" in out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith(("| 1 |", "| 16 |"))]
    assert len(rows) == 2
    for row in rows:
        base_rate, tree_rate, ratio = (float(x) for x in row[1:4])
        assert base_rate > 0 and tree_rate > 0
        assert ratio == pytest.approx(tree_rate / base_rate, rel=0.02)  # rates print rounded
    assert "- non-200 answers: 0" in out
    listed = subprocess.run(
        ["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True, check=True
    )
    assert "arinext-ab-" not in listed.stdout  # the base checkout is removed
