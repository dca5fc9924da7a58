"""A response's head and body leave in one write; nothing is held past the loop's step."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from arinext.service.http_limits import _CoalescingTransport
from tests.service.audio import encode_sf, signal


class _Recorder(asyncio.Transport):
    """The transport underneath: records what it is asked to do."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append(("write", bytes(data)))

    def close(self) -> None:
        self.calls.append(("close", b""))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", b""))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 5)}.get(name, default)


def _wrapped(loop: asyncio.AbstractEventLoop) -> tuple[_Recorder, _CoalescingTransport]:
    inner = _Recorder()
    return inner, _CoalescingTransport(inner, loop)


async def _scenario() -> dict[str, list[tuple[str, bytes]]]:
    loop = asyncio.get_running_loop()
    seen = {}

    inner, coalescing = _wrapped(loop)
    coalescing.write(b"HTTP/1.1 200 OK\r\n\r\n")
    coalescing.write(memoryview(b"{}"))
    seen["head and body"] = list(inner.calls)
    await asyncio.sleep(0)
    seen["after the step"] = list(inner.calls)

    inner, coalescing = _wrapped(loop)
    coalescing.write(b"head of a stream")
    seen["held"] = list(inner.calls)
    seen["buffered"] = [("size", str(coalescing.get_write_buffer_size()).encode())]
    await asyncio.sleep(0)
    seen["lone write, after the step"] = list(inner.calls)

    inner, coalescing = _wrapped(loop)
    coalescing.write(b"head")
    coalescing.write(bytes(20_000))  # over the hold size: passes through, nothing joined
    seen["large body"] = [(call, data[:4]) for call, data in inner.calls]
    await asyncio.sleep(0)
    seen["large body, after the step"] = [(call, data[:4]) for call, data in inner.calls]

    inner, coalescing = _wrapped(loop)
    coalescing.write(b"431 answer")
    coalescing.close()
    await asyncio.sleep(0)
    seen["write then close"] = list(inner.calls)

    inner, coalescing = _wrapped(loop)
    coalescing.write(b"dropped")
    coalescing.abort()
    await asyncio.sleep(0)
    seen["write then abort"] = list(inner.calls)
    seen["forwarded"] = [("peername", repr(coalescing.get_extra_info("peername")).encode())]
    return seen


def test_writes_are_joined_flushed_closed_and_aborted_in_order() -> None:
    seen = asyncio.run(_scenario())
    assert seen["head and body"] == [("write", b"HTTP/1.1 200 OK\r\n\r\n{}")]
    assert seen["after the step"] == seen["head and body"]
    assert seen["held"] == []
    assert seen["buffered"] == [("size", b"23")]  # 7 underneath + 16 held
    assert seen["lone write, after the step"] == [("write", b"head of a stream")]
    assert seen["large body"] == [("write", b"head"), ("write", bytes(4))]
    assert seen["large body, after the step"] == seen["large body"]
    assert seen["write then close"] == [("write", b"431 answer"), ("close", b"")]
    assert seen["write then abort"] == [("abort", b"")]
    assert seen["forwarded"] == [("peername", b"('127.0.0.1', 5)")]


def _answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP/1.1 answer with a Content-Length: (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":")[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, body
        body += chunk
    assert len(body) == length  # nothing of a next answer came early
    return head, body


def test_served_answers_stay_whole_and_in_order_on_a_kept_alive_connection(
    server_factory: Callable, speech_artifact: Path
) -> None:
    command = [sys.executable, "-m", "arinext", "serve", "--no-demo"]
    command += ["--models", str(speech_artifact)]
    clip = encode_sf(signal(1.0, 16000), 16000, "WAV", "PCM_16")
    classify = (
        b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
        + f"Content-Length: {len(clip)}\r\n\r\n".encode()
        + clip
    )
    with server_factory(command) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            for request in (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", classify) * 2:
                sock.sendall(request)
                head, body = _answer(sock)
                assert head.startswith(b"HTTP/1.1 200 OK"), head
                assert json.loads(body)
