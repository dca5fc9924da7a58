"""Freed memory goes back to the OS once the server falls idle after work."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from arinext.service import memory

# Fragments 200 MB of malloc'd blocks in a worker thread's arena, as a burst of requests does,
# keeping every 50th block so that glibc cannot give the memory back from the top of a heap.
_FRAGMENT = """
import threading
from pathlib import Path
from arinext.service.memory import release_free_memory

def rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

kept = []
def burst():
    blocks = [bytearray(4096) for _ in range(51_200)]
    kept.extend(blocks[::50])

thread = threading.Thread(target=burst)
thread.start()
thread.join()
before = rss_mb()
print(release_free_memory(), before, rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc")
def test_release_gives_a_fragmented_burst_back() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _FRAGMENT], capture_output=True, text=True, check=True
    )
    released, before, after = result.stdout.split()
    assert released == "True"
    assert float(before) - float(after) > 100, result.stdout  # of the ~200 MB freed


def test_trims_once_after_work_and_never_while_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    state = {"runs": 0, "busy": False}
    monkeypatch.setattr(memory, "release_free_memory", lambda: trims.append(state["runs"]) or True)

    async def scenario() -> None:
        task = asyncio.create_task(
            memory.trim_when_idle(lambda: state["runs"], lambda: state["busy"], 0.01)
        )
        await asyncio.sleep(0.05)
        assert trims == []  # no work, nothing to give back
        state.update(runs=3, busy=True)
        await asyncio.sleep(0.05)
        assert trims == []  # work in flight
        state["busy"] = False
        await asyncio.sleep(0.05)
        assert trims == [3]  # once, after the work
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
