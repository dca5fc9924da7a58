"""Hostile clients against a real ``arinext serve`` process: oversized bodies and headers, slow
and vanishing clients, decompression and resampling bombs, and long clips crowding short ones.

Every limit answers with its status and JSON error; none of these can take the server's memory,
its queue or a 500 from it. Memory is the server's peak RSS (``VmHWM``, reset through
``/proc/PID/clear_refs`` before each case), so a short spike cannot hide between samples.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.service import audio
from tests.service.conftest import ServerProcess, run_server

WAV = {"content-type": "audio/wav"}
FLAC = {"content-type": "audio/flac"}
ONE_SECOND = audio.encode_sf(audio.signal(1.0, 16000), 16000, "WAV", "PCM_16")
LIMIT = 20_000_000  # the default upload limit
TIMEOUT = 2.0  # header and body read timeouts of the server under test
MB = 1 << 20


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, speech_artifact: Path
) -> Iterator[ServerProcess]:
    """``arinext serve`` (with its header limits) on the tiny speech model."""
    command = [
        sys.executable,
        "-m",
        "arinext",
        "serve",
        "--no-demo",
        "--models",
        str(speech_artifact),
    ]
    with run_server(
        tmp_path_factory.mktemp("hostile"),
        command,
        header_timeout_seconds=TIMEOUT,
        body_timeout_seconds=TIMEOUT,
        # The queue-time bound depends on how fast this machine is at the moment (it has its
        # own tests); the count and cost rules under test here must hold on any machine.
        max_queue_ms=600_000,
        log_level="info",
    ) as process:
        yield process


def _address(server: ServerProcess) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def _raw(server: ServerProcess, payload: bytes, *, wait: float = 10.0) -> bytes:
    """Send ``payload`` on a fresh connection and return what comes back before it closes."""
    with socket.create_connection(_address(server), timeout=wait) as sock:
        with contextlib.suppress(OSError):  # the server may close while we are still sending
            sock.sendall(payload)
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@contextlib.contextmanager
def _peak_growth(pid: int) -> Iterator[dict[str, float]]:
    """Peak RSS growth in MB of process ``pid`` over the block (``out["mb"]``)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _rss_kib(pid, "VmRSS")
    out: dict[str, float] = {}
    yield out
    out["mb"] = (_rss_kib(pid, "VmHWM") - before) / 1024


# --- issue 10: a readable 413 whatever the client ------------------------------------------------


def test_an_upload_over_the_limit_gets_a_readable_413_with_urllib_httpx_and_curl(
    server: ServerProcess, tmp_path: Path
) -> None:
    big = bytes(64 * MB)

    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield bytes(MB)

    for data in (big, chunks()):  # urllib sends an iterable chunked
        request = urllib.request.Request(f"{server.url}/classify", data=data, headers=WAV)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=60)
        assert info.value.code == 413
        assert b'"upload_too_large"' in info.value.read()

    with httpx.Client(base_url=server.url, timeout=60) as client:
        for content in (big, chunks()):
            response = client.post("/classify", content=content, headers=WAV)
            assert response.status_code == 413
            assert response.json()["error"]["code"] == "upload_too_large"

    body = tmp_path / "big.bin"
    body.write_bytes(big)
    for extra in ([], ["-H", "Transfer-Encoding: chunked"]):
        curl = ["curl", "-sS", "-w", "\n%{http_code}", "-H", "Content-Type: audio/wav", *extra]
        done = subprocess.run(
            [*curl, "--data-binary", f"@{body}", f"{server.url}/classify"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        answer, status = done.stdout.rsplit("\n", 1)
        assert status == "413" and '"upload_too_large"' in answer


# --- issue 16.4: headers, slow clients, lying Content-Length -------------------------------------


def test_a_32_mb_header_is_refused_early_while_healthz_keeps_answering(
    server: ServerProcess,
) -> None:
    answer: dict[str, bytes] = {}
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (32 * MB) + b"\r\n\r\n"
    sender = threading.Thread(target=lambda: answer.update(big=_raw(server, request)))
    sender.start()
    statuses = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        while sender.is_alive() or not statuses:
            statuses.append(client.get("/healthz").status_code)
    sender.join(30)
    assert set(statuses) == {200}
    # 431 in our JSON shape, or the connection closed before the client could read it.
    big = answer["big"]
    assert big == b"" or (big.startswith(b"HTTP/1.1 431") and b'"headers_too_large"' in big)

    many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: 1\r\n" * 200 + b"\r\n"
    assert _raw(server, many).startswith(b"HTTP/1.1 431")


def test_slow_headers_and_short_bodies_are_cut_off_after_the_read_timeout(
    server: ServerProcess,
) -> None:
    began = time.monotonic()
    slow = _raw(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", wait=30)
    assert slow.startswith(b"HTTP/1.1 408") and b'"header_timeout"' in slow
    short = b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
    short += b"Content-Length: 100000\r\n\r\n" + ONE_SECOND[:1000]
    answered = _raw(server, short, wait=30)
    assert answered.startswith(b"HTTP/1.1 408") and b'"body_timeout"' in answered
    assert time.monotonic() - began < 4 * TIMEOUT + 10  # cut off, not held


# --- issue 16.5: a client that goes away is a 499, not a 500 -------------------------------------


def test_aborted_uploads_are_counted_as_499_and_never_as_500(server: ServerProcess) -> None:
    head = b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
    head += b"Content-Length: 1000000\r\n\r\n"
    for _ in range(20):
        with socket.create_connection(_address(server), timeout=10) as sock:
            sock.sendall(head + ONE_SECOND[:50_000])
            time.sleep(0.01)
    deadline = time.monotonic() + 30
    while True:
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        closed = [line for line in metrics.splitlines() if 'status="499"' in line]
        if (closed and float(closed[0].split()[-1]) >= 20) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert 'status="500"' not in metrics
    assert closed and float(closed[0].split()[-1]) >= 20, closed
    assert "Traceback" not in server.log_text()
    assert server.log_text().count("the client closed the connection") >= 20


# --- issue 16.1: memory per request is bounded by the model's rate -------------------------------


def test_long_high_rate_clips_are_decoded_as_a_stream_in_bounded_memory(
    server: ServerProcess,
) -> None:
    pid = server.process.pid
    with httpx.Client(base_url=server.url, timeout=300) as client:
        assert client.post("/classify", content=ONE_SECOND, headers=WAV).status_code == 200
        bomb = audio.silence_flac(599, 96_000)  # 180 KB; 230 MB as float32 at its own rate
        with _peak_growth(pid) as one:
            response = client.post("/classify", content=bomb, headers=FLAC)
        assert response.status_code == 200, response.text
        assert response.json()["duration"] == pytest.approx(599)
        assert one["mb"] <= 150, one

        # Rates outside the documented 8-192 kHz are refused at the first block.
        refused = client.post("/classify", content=audio.silence_flac(1, 384_000), headers=FLAC)
        assert refused.status_code == 400
        assert "outside the accepted 8000..192000 Hz" in refused.json()["error"]["message"]

    bombs = [audio.silence_flac(599 - i, 96_000) for i in range(4)]  # different bytes each
    # A window a second: the decoding is what four at once must keep bounded, and the features
    # of the default 0.25 s scan were checked above.
    with _peak_growth(pid) as four, ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(
                lambda data: httpx.post(
                    f"{server.url}/classify",
                    content=data,
                    headers=FLAC,
                    params={"hop": 1.0},
                    timeout=300,
                ),
                bombs,
            )
        )
    assert [a.status_code for a in answers] == [200] * 4
    assert four["mb"] <= 300, four


# --- issue 16.2: long clips take their turn without starving short requests ---------------------


def test_long_clips_in_flight_do_not_make_short_requests_fail(server: ServerProcess) -> None:
    longs = [audio.silence_flac(599 - i, 16_000) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        pending = [
            pool.submit(
                httpx.post, f"{server.url}/classify", content=data, headers=FLAC, timeout=600
            )
            for data in longs
        ]
        with httpx.Client(base_url=server.url, timeout=60) as client:
            shorts = [
                client.post("/classify", content=ONE_SECOND, headers=WAV).status_code
                for _ in range(20)
            ]
            in_flight = sum(not future.done() for future in pending)
        answers = [future.result() for future in pending]
    assert shorts == [200] * 20
    assert in_flight > 0  # the short requests really ran while long clips were in flight
    assert [a.status_code for a in answers] == [200] * 4
    assert all(len(a.json()["predictions"][0]["top_k"]) == 5 for a in answers)


def _answer(sock: socket.socket) -> bytes:
    """One HTTP response read off ``sock`` (headers and Content-Length body), without waiting
    for the connection to close."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or b"\r\n\r\n"
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length and (chunk := sock.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body


def test_an_overloaded_server_refuses_before_reading_the_body(
    server_factory: Callable, slow_artifact: Path
) -> None:
    clip = audio.encode_sf(audio.signal(1.0, 16000), 16000, "WAV", "PCM_16")
    # Tens of ms a window against a 1 ms bound: once measured, every request is over it.
    with server_factory(models=slow_artifact, max_queue_ms=1) as server:
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            assert client.post("/classify", content=clip, headers=WAV).status_code == 200
        head = b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
        with socket.create_connection(_address(server), timeout=10) as sock:
            sock.sendall(head + b"Content-Length: 1000000\r\n\r\n")  # and never the body
            answer = _answer(sock)  # a server that read the body first would time out here
            assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
            assert b"retry-after: 1" in answer.lower() and b'"overloaded"' in answer
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'arinext_requests_total{endpoint="/classify",status="503"} 1.0' in metrics
        assert 'arinext_rejections_total{reason="queue_time"} 1.0' in metrics


def test_connections_over_the_limit_get_a_json_503_with_retry_after(
    server_factory: Callable, speech_artifact: Path
) -> None:
    command = [sys.executable, "-m", "arinext", "serve", "--no-demo"]
    command += ["--models", str(speech_artifact)]
    limits = {"max_connections": 3, "header_timeout_seconds": 120}
    healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with server_factory(command, **limits) as server, contextlib.ExitStack() as idle:
        opened = [
            idle.enter_context(socket.create_connection(_address(server), timeout=10))
            for _ in range(3)  # connections that send nothing still count
        ]
        deadline = time.monotonic() + 30  # until the server has accepted all three
        while (answer := _raw(server, healthz)).startswith(b"HTTP/1.1 200"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert answer.startswith(b"HTTP/1.1 503")
        assert b"retry-after: 1" in answer.lower() and b'"overloaded"' in answer
        # The connections within the limit are still served (uvicorn's own limit_concurrency
        # would refuse them too while the count is at the limit).
        for sock in opened:
            sock.sendall(healthz)
            assert _answer(sock).startswith(b"HTTP/1.1 200")
        # The refusal is answered by the app, so it is counted like any other (and the
        # connection it came on is closed).
        opened[0].sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        text = _answer(opened[0]).decode()
        assert 'arinext_rejections_total{reason="connections"}' in text
        assert 'arinext_requests_total{endpoint="/healthz",status="503"}' in text
