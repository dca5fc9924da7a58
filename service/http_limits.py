"""Limits uvicorn does not enforce itself: header size and count, and the time to send them.

uvicorn's httptools protocol buffers a request's headers without bound and waits for them
without a deadline, so one client could hold megabytes of memory and a connection forever
(nginx bounds both: ``large_client_header_buffers``, ``client_header_timeout``). This protocol
answers 431 when the request line and headers pass ``max_header_bytes`` or ``max_headers``
fields, and 408 when they are not complete ``header_timeout`` seconds after the request began;
both close the connection, in the service's JSON error shape. The body's size and read time are
bounded by :class:`arinext.service.middleware.BodyLimitMiddleware`. It also bounds open connections:
a request on a connection opened beyond ``max_connections`` is marked
(:func:`over_connection_limit`) and the app answers it with the service's JSON 503 and
``Retry-After``, counted in its metrics, and closes the connection, while the connections within
the limit keep being served.
(uvicorn's own ``limit_concurrency`` instead refuses requests on *every* connection while the
count is over, logging a warning each time: under a flood of connections, clients that were
being served are refused too and all of them reconnect, which costs more than the work.)
``arinext serve`` runs uvicorn with this protocol.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["LimitedHttpToolsProtocol", "limited_protocol", "over_connection_limit", "received_at"]

# ASGI scope extension {"time": time.perf_counter()} for when the request's headers were parsed.
# Under a flood the request's task starts later than that (the loop has hundreds of callbacks to
# run first); the queue-time deadline counts from here.
_RECEIVED = "arinext.received"
# ASGI scope extension present on requests of a connection opened beyond ``max_connections``.
_OVER_LIMIT = "arinext.over_connection_limit"


def received_at(scope: Any) -> float | None:
    """When :class:`LimitedHttpToolsProtocol` parsed this request's headers (None under another
    server)."""
    received = scope.get("extensions", {}).get(_RECEIVED)
    return received["time"] if received else None


def over_connection_limit(scope: Any) -> bool:
    """True for a request on a connection that :class:`LimitedHttpToolsProtocol` opened beyond
    its ``max_connections``: the app refuses it."""
    return _OVER_LIMIT in scope.get("extensions", {})


_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class _HeaderLimitError(Exception):
    """Raised inside a parser callback to stop parsing a request over the header limits."""


# Writes up to this size are held for the next one; larger ones go out as they are.
_HOLD_BYTES = 16_384


class _CoalescingTransport:
    """A transport that sends a response's head and body in one write.

    uvicorn writes a response's status line and headers when the app sends
    ``http.response.start`` and the body when it sends ``http.response.body``: for every small
    JSON answer, two system calls and two TCP segments the client must wake up for. Here a write
    of up to 16 KiB is held until the next one, which sends both at once, or until the end of the
    event loop's step (``call_soon``), so nothing waits longer than that. Everything else is the
    wrapped transport's; closing sends what is held first, aborting drops it.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held, self._held = self._held, None
        if len(data) > _HOLD_BYTES:  # a large body or file chunk: no copies
            if held is not None:
                self._transport.write(held)
            self._transport.write(data)
        elif held is None:
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(held + data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header limits; configure with :func:`limited_protocol`."""

    max_header_bytes = 32_768
    max_headers = 100
    header_timeout = 10.0
    max_connections: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_headers = False
        self._limit_hit = False
        self._raw_bytes = 0  # bytes received while the headers were incomplete
        self._parsed_bytes = 0  # request line and header fields as parsed
        self._fields = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._over_limit = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the header clock as soon as the connection opens (slow-loris clients), and mark
        a connection opened beyond ``max_connections``; writes go through
        :class:`_CoalescingTransport`."""
        coalescing = _CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(coalescing)  # type: ignore[arg-type]
        limit = self.max_connections
        self._over_limit = limit is not None and len(self.connections) > limit
        self._begin_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the header clock."""
        self._stop_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed httptools, then refuse when incomplete headers have passed the byte limit."""
        if self._in_headers:
            self._raw_bytes += len(data)
        super().data_received(data)
        if (
            self._in_headers
            and self._raw_bytes > self.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._refuse_headers()

    def send_400_response(self, msg: str) -> None:
        """Answer 431 instead of uvicorn's 400 when the parser stopped at our header limit."""
        if self._limit_hit:
            self._refuse_headers()
        else:
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        """A new request (also the next one on a kept-alive connection): restart the clock."""
        super().on_message_begin()
        self._begin_headers()

    def on_url(self, url: bytes) -> None:
        """Count the request line."""
        self._count(len(url), fields=0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count header fields and their bytes."""
        self._count(len(name) + len(value) + 4, fields=1)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """Headers are in: stop the clock, stamp the request's arrival (:func:`received_at`), then
        let uvicorn start the request."""
        self._in_headers = False
        self._stop_header_timer()
        extensions = self.scope.setdefault("extensions", {})
        extensions[_RECEIVED] = {"time": time.perf_counter()}
        if self._over_limit:
            extensions[_OVER_LIMIT] = {}
        super().on_headers_complete()

    def _begin_headers(self) -> None:
        self._in_headers = True
        self._limit_hit = False
        self._raw_bytes = self._parsed_bytes = self._fields = 0
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _count(self, size: int, fields: int) -> None:
        self._parsed_bytes += size
        self._fields += fields
        if self._parsed_bytes > self.max_header_bytes or self._fields > self.max_headers:
            self._limit_hit = True
            raise _HeaderLimitError  # httptools stops parsing and uvicorn calls send_400_response

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._in_headers and not self.transport.is_closing():
            self._in_headers = False
            self._refuse(
                408, "header_timeout", f"the request headers took over {self.header_timeout:g} s"
            )

    def _refuse_headers(self) -> None:
        self._in_headers = False
        self._stop_header_timer()
        self._refuse(
            431,
            "headers_too_large",
            f"request headers exceed {self.max_header_bytes} bytes or {self.max_headers} fields",
        )

    def _refuse(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])]
        defaults = self.server_state.default_headers
        head += [name + b": " + value + b"\r\n" for name, value in defaults]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def limited_protocol(
    *,
    max_header_bytes: int,
    max_headers: int,
    header_timeout: float,
    max_connections: int | None = None,
) -> type[LimitedHttpToolsProtocol]:
    """A protocol class with these limits, for ``uvicorn.run(http=...)`` (without uvicorn's own
    ``limit_concurrency``: ``max_connections`` replaces it)."""
    return type(
        "ConfiguredHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {
            "max_header_bytes": max_header_bytes,
            "max_headers": max_headers,
            "header_timeout": header_timeout,
            "max_connections": max_connections,
        },
    )
