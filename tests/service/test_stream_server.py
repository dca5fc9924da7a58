"""``WS /stream`` against a real uvicorn process over real WebSockets, at real time.

The keyword test needs the embedded default model with its ``_silence_`` and ``_unknown_``
classes: a model without them names a keyword for every window, silence included.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from arinext.service.settings import EMBEDDED_MODEL_DIR
from tests.service.audio import signal
from tests.service.conftest import REPO, ServerProcess, run_server
from tests.service.speech import espeak_available, keyword_recording

RATE = 16000
CHUNK_SECONDS = 0.02
HOP = 0.25
STRICT_THRESHOLD = 0.75
DEFAULT_MODEL = EMBEDDED_MODEL_DIR


def _ws_url(server: ServerProcess) -> str:
    return server.url.replace("http://", "ws://") + "/stream"


def _start(**fields: object) -> str:
    return json.dumps({"type": "start", "format": "s16le", "sample_rate": RATE, **fields})


def _pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def _drain(ws: ClientConnection, timeout: float = 30.0) -> tuple[list[dict], int, str]:
    """Events until the server closes, and its close code and reason."""
    events = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            events.append(json.loads(ws.recv(timeout=deadline - time.monotonic())))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "the server dropped the connection without a close frame"
        return events, closed.rcvd.code, closed.rcvd.reason
    raise AssertionError(f"the stream was not closed in {timeout} s; events: {events[-3:]}")


def _send_paced(ws: ClientConnection, data: bytes, bytes_per_second: float, chunk: int) -> None:
    """Send ``data`` in ``chunk``-byte messages at ``bytes_per_second``; stop if closed."""
    began = time.monotonic()
    for sent in range(0, len(data), chunk):
        delay = began + sent / bytes_per_second - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            ws.send(data[sent : sent + chunk])
        except ConnectionClosed:
            return


@pytest.fixture(scope="module")
def tiny_server(
    tmp_path_factory: pytest.TempPathFactory, speech_artifact: Path
) -> Iterator[ServerProcess]:
    with run_server(
        tmp_path_factory.mktemp("stream-server"),
        models=speech_artifact,
        stream_idle_timeout_seconds=1.0,
    ) as server:
        yield server


def _classify_still_serves(server: ServerProcess) -> None:
    from tests.service.test_stream import _wav

    answer = httpx.post(
        f"{server.url}/classify",
        content=_wav(1.0),
        headers={"content-type": "audio/wav"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text


BAD_STREAMS: dict[str, tuple[Callable[[ClientConnection], None], int, str]] = {
    "garbage first message": (lambda ws: ws.send(b"\x89PNG\r\n\x1a\n" * 10), 1008, "invalid_start"),
    "wrong sample rate": (lambda ws: ws.send(_start(sample_rate=3)), 1008, "invalid_start"),
    "NaN floats": (
        lambda ws: (
            ws.send(_start(format="f32le")),
            ws.send(np.array([0.0, np.nan, 0.5], "<f4").tobytes()),
        ),
        1007,
        "invalid_audio",
    ),
    "10x real-time flood": (
        lambda ws: (
            ws.send(_start()),
            _send_paced(ws, _pcm16(signal(20.0, RATE)[:, 0]), 10 * 2 * RATE, 6400),
        ),
        1008,
        "too_fast",
    ),
    "silent past the idle timeout": (
        lambda ws: (ws.send(_start()), ws.send(_pcm16(signal(0.5, RATE)[:, 0]))),
        1008,
        "idle_timeout",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_STREAMS))
def test_bad_streams_close_cleanly_and_classify_keeps_serving(
    tiny_server: ServerProcess, case: str
) -> None:
    act, code, reason = BAD_STREAMS[case]
    began = time.monotonic()
    with connect(_ws_url(tiny_server), open_timeout=10) as ws:
        sender = threading.Thread(target=act, args=(ws,), daemon=True)
        sender.start()
        events, closed_with, text = _drain(ws, timeout=20)
        sender.join(10)
    assert (closed_with, text.split(":")[0]) == (code, reason), text
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == reason
    if case == "silent past the idle timeout":
        assert 1.0 <= time.monotonic() - began < 10
    _classify_still_serves(tiny_server)
    assert tiny_server.process.poll() is None


def test_the_33rd_stream_is_refused_while_32_stream(tmp_path: Path, speech_artifact: Path) -> None:
    # Its own server: opening 32 streams can take longer than tiny_server's idle timeout.
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(run_server(tmp_path, models=speech_artifact))
        for _ in range(32):
            ws = stack.enter_context(connect(_ws_url(server), open_timeout=10))
            ws.send(_start())
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        with connect(_ws_url(server), open_timeout=10) as extra:
            events, code, reason = _drain(extra)
        assert code == 1013 and reason.startswith("too_many_streams: 32 streams are open")
        assert events[0]["error"]["code"] == "too_many_streams"
        _classify_still_serves(server)


@pytest.fixture
def keyword_server(tmp_path: Path) -> Iterator[ServerProcess]:
    with run_server(tmp_path, models=DEFAULT_MODEL) as server:
        yield server


@pytest.mark.system
@pytest.mark.skipif(not espeak_available(), reason="espeak-ng (Debian) missing")
def test_three_keywords_detected_at_the_right_times_in_real_time(
    keyword_server: ServerProcess,
) -> None:
    recording = keyword_recording()
    data = _pcm16(recording.samples)
    chunk = round(CHUNK_SECONDS * RATE) * 2
    with connect(_ws_url(keyword_server), open_timeout=10) as ws:
        # A stricter point than the default (tuned on recorded speakers, where it answers at
        # most a wrong word a minute): at the default, this synthetic voice's "open the door" is
        # heard as "backward" (docs/default-model.md).
        ws.send(_start(hop=HOP, threshold=STRICT_THRESHOLD))
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        sender = threading.Thread(
            target=lambda: (_send_paced(ws, data, 2 * RATE, chunk), ws.send('{"type": "end"}')),
            daemon=True,
        )
        sender.start()
        events, code, reason = _drain(ws, timeout=60)
        sender.join(10)
    assert code == 1000, reason
    windows = [e for e in events if e["type"] == "window"]
    assert len(windows) == events[-1]["windows"] >= 36
    detections = [e for e in events if e["type"] == "detection"]
    heard = [(d["label"], d["start"], d["end"]) for d in detections]
    keywords = recording.keywords
    assert [d["label"] for d in detections] == [k.text for k in keywords], heard
    for detection, keyword in zip(detections, keywords, strict=True):
        # Live: not before the word begins, at most one hop after the window that holds it all.
        assert keyword.start < detection["end"] <= keyword.end + HOP, (keyword, heard)
        assert detection["score"] >= STRICT_THRESHOLD


def test_example_client_streams_a_file_and_prints_what_it_hears(
    tiny_server: ServerProcess, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.flac"
    sf.write(clip, signal(2.0, 22050)[:, 0], 22050, format="FLAC")
    began = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "stream_client.py"),
            str(clip),
            "--windows",
            "--url",
            _ws_url(tiny_server),
            "--hop",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("streaming to tiny-speech-commands (1.023 s windows), hop 0.5 s")
    windows = [line for line in lines if " s  speech_commands: " in line]
    assert len(windows) == 3  # ending at 1.023 s, 1.523 s, and at the end of the audio
    assert windows[-1].startswith("    0.98-2.00 s  speech_commands: ")
    assert lines[-1].startswith("done: 2.00 s of audio, 3 windows")
    assert time.monotonic() - began >= 2.0  # paced at real time


def test_stream_load_benchmark_prints_its_table(speech_artifact: Path) -> None:
    arguments = ["--streams", "3", "--seconds", "2", "--model", str(speech_artifact)]
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "stream_load.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    (header,) = [i for i, line in enumerate(lines) if line.startswith("| streams | completed |")]
    row = lines[header + 2].strip("|").split("|")
    streams, completed, windows = (int(cell) for cell in row[:3])
    assert streams == 3 and 0 <= completed <= 3  # a loaded machine may refuse some (reported)
    assert windows >= 5 * completed  # 5 windows in 2 s for each completed stream
    assert float(row[8]) >= 1  # windows per model run, from the server's metrics
    assert ("closed early: " in done.stdout) == (completed < 3)
    assert "stream 4: closed with 1013 (too_many_streams: 3 streams are open" in done.stdout


def test_the_documented_python_client_runs(tiny_server: ServerProcess) -> None:
    page = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    section = page.split("## Live streaming (`WS /stream`)", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    code = code.replace("ws://127.0.0.1:8000/stream", _ws_url(tiny_server))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert all(
        re.fullmatch(r"\d+\.\d\d s: \w+ \(\d\.\d\d\)", line) for line in done.stdout.splitlines()
    )
