"""ASGI middleware: request metrics and the request-body size limit.

Both are plain ASGI (not ``BaseHTTPMiddleware``) so they see every request, including the mounted
demo, and never buffer a body.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ApiError, error_response
from service.metrics import Metrics

__all__ = ["UNMATCHED", "BodyLimitMiddleware", "RequestMetricsMiddleware"]

UNMATCHED = "unmatched"
_UNCOUNTED = frozenset({"/metrics"})


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "upload_too_large", f"request body exceeds {limit} bytes", reason="too_large"
    )


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with a 413, also when they arrive chunked.

    A declared ``Content-Length`` over the limit is refused before anything is read; otherwise the
    bytes are counted as the app reads them and the read that crosses the limit raises, so a
    chunked upload without a length is stopped after at most one chunk over the limit.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.metrics.rejections.labels(reason="too_large").inc()
        await error_response(_too_large(self.max_bytes))(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _too_large(self.max_bytes)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watching_send)
        except ApiError as exc:
            # Routes turn the error into a 413 themselves; this catches readers outside our
            # routes (the mounted demo), which would otherwise answer 500.
            if started or exc.status != 413:
                raise
            await self._refuse(scope, receive, send)


class RequestMetricsMiddleware:
    """Count and time requests by route template (never the raw path, which is unbounded)."""

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, routes: Callable[[], Sequence[BaseRoute]]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def _endpoint(self, scope: Scope) -> str:
        partial = None
        for route in self.routes():
            path = getattr(route, "path", None)
            if path is None:  # e.g. FastAPI's wrapper of an included router; its routes are listed
                continue
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return path
            if match is Match.PARTIAL and partial is None:
                partial = path
        return partial or UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = self._endpoint(scope)
        if endpoint in _UNCOUNTED:
            await self.app(scope, receive, send)
            return
        self.metrics.requests_received.labels(endpoint=endpoint).inc()
        start = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            self.metrics.request_duration.labels(endpoint=endpoint).observe(
                time.perf_counter() - start
            )
