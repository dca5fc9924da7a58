"""SIGTERM ends a real server the documented way (issue 38, item 7): open streams get the
``shutting_down`` event and close 1001, and ``arinext serve`` exits 0 after its cleanup."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.service.audio import signal as noise
from tests.service.conftest import ServerProcess, run_server

RATE = 16000
SHUTTING_DOWN = {"code": "shutting_down", "message": "the server is shutting down"}
needs_gradio = pytest.mark.skipif(
    importlib.util.find_spec("gradio") is None, reason="the demo (Gradio) is not installed"
)


def _ws_url(server: ServerProcess) -> str:
    return server.url.replace("http://", "ws://") + "/stream"


async def _until_closed(ws: ClientConnection) -> tuple[int, str, list[dict], float]:
    """Events until the server closes; its close code and reason, and when it closed."""
    events: list[dict] = []
    try:
        async with asyncio.timeout(60):
            while True:
                events.append(json.loads(await ws.recv()))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, f"no close frame (events {events})"
        return closed.rcvd.code, closed.rcvd.reason, events, time.monotonic()


async def _streaming(ws: ClientConnection) -> None:
    """Real-time audio, 20 ms a message, until the connection closes."""
    chunk = (noise(0.02, RATE)[:, 0] * 3000).astype("<i2").tobytes()
    try:
        while True:
            await ws.send(chunk)
            await asyncio.sleep(0.02)
    except ConnectionClosed:
        pass


async def _stop_with_streams(server: ServerProcess) -> tuple[list[tuple], float]:
    """Open a scoring stream and one that has not sent its start, SIGTERM the server; each
    stream's close (code, reason, events, when) and when the signal was sent."""
    url = _ws_url(server)
    async with (
        connect(url, compression=None) as scoring,
        connect(url, compression=None) as waiting,
    ):
        start = {"type": "start", "format": "s16le", "sample_rate": RATE, "hop": 0.25}
        await scoring.send(json.dumps(start))
        assert json.loads(await scoring.recv())["type"] == "ready"
        sender = asyncio.create_task(_streaming(scoring))
        await asyncio.sleep(1.5)  # a few windows scored
        signalled = time.monotonic()
        os.kill(server.process.pid, signal.SIGTERM)
        closes = await asyncio.gather(_until_closed(scoring), _until_closed(waiting))
        await sender
    return list(closes), signalled


def _assert_shut_down_documented_way(closes: list[tuple]) -> None:
    for code, reason, events, _ in closes:
        assert code == 1001, (code, reason, events[-3:])
        assert reason == "shutting_down: the server is shutting down"
        assert events[-1] == {"type": "error", "error": SHUTTING_DOWN}, events[-3:]


@needs_gradio
def test_sigterm_closes_streams_1001_shutting_down_and_exits_0_after_cleanup(
    tmp_path: Path, speech_artifact: Path
) -> None:
    """``arinext serve`` with the demo: after the drain, each open stream (scoring, or not yet
    started) gets the ``shutting_down`` error event and close 1001; the process then exits 0,
    having run its atexit cleanup (the demo's upload folder is gone)."""
    drain = 1.0
    command = [sys.executable, "-m", "arinext", "serve", "--models", str(speech_artifact)]
    settings = {"demo": "true", "drain_seconds": drain, "log_level": "info"}
    with run_server(tmp_path, command, **settings) as server:
        uploads = Path(tempfile.gettempdir()) / f"arinext-demo-uploads-{server.process.pid}"
        assert uploads.is_dir()
        (closes, signalled) = asyncio.run(_stop_with_streams(server))
        status = server.process.wait(60)
    _assert_shut_down_documented_way(closes)
    scoring_events = closes[0][2]
    assert any(e["type"] == "window" for e in scoring_events)
    # Still serving while draining: streams are closed only after the drain.
    assert all(closed_at >= signalled + drain - 0.1 for *_, closed_at in closes)
    log = server.log_text()
    assert status == 0, log
    assert not uploads.exists(), log
    assert "Traceback" not in log, log


def test_plain_uvicorn_closes_streams_1001_shutting_down_too(
    tmp_path: Path, speech_artifact: Path
) -> None:
    """Under ``uvicorn --factory arinext.service.app:create_app`` (no drain) the streams close the
    same way; uvicorn itself then re-raises SIGTERM, so that process dies by the signal."""
    with run_server(tmp_path, models=speech_artifact, drain_seconds=0) as server:
        (closes, _) = asyncio.run(_stop_with_streams(server))
        status = server.process.wait(60)
    _assert_shut_down_documented_way(closes)
    assert status == -signal.SIGTERM, server.log_text()
