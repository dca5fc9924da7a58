"""ASGI middleware: request metrics, early admission, the request-body size and time limits, and
redirects that do not reflect ``Host``.

All are plain ASGI (not ``BaseHTTPMiddleware``) so they see every request, including the mounted
demo, and never buffer a body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from urllib.parse import quote

from starlette.datastructures import URL, Headers, MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from arinext.service.errors import ApiError
from arinext.service.http_errors import error_response
from arinext.service.http_limits import over_connection_limit
from arinext.service.metrics import Metrics

__all__ = [
    "CLIENT_CLOSED",
    "UNMATCHED",
    "AdmissionMiddleware",
    "BodyLimitMiddleware",
    "RelativeRedirects",
    "RequestMetricsMiddleware",
]

logger = logging.getLogger(__name__)

UNMATCHED = "unmatched"
CLIENT_CLOSED = 499  # nginx's "client closed request"
_UNCOUNTED = frozenset({"/metrics"})
_ENDPOINT_CACHE = 1024


def _too_large(limit: int, *, close: bool = False) -> ApiError:
    return ApiError(
        413,
        "upload_too_large",
        f"request body exceeds {limit} bytes",
        reason="too_large",
        headers={"Connection": "close"} if close else None,
    )


def _body_timeout(seconds: float) -> ApiError:
    return ApiError(
        408,
        "body_timeout",
        f"the request body did not arrive in time (no data for {seconds:g} s)",
        reason="timeout",
        headers={"Connection": "close"},
    )


class BodyLimitMiddleware:
    """Bound what a request body may cost: its size (413) and its read time (408).

    A declared ``Content-Length`` over the limit is refused before the app reads anything; a
    chunked upload is counted as the app reads it and refused at the read that crosses the limit.
    Either way the rest of the body is read and discarded (up to ``discard_bytes``) before the
    413 is sent, as nginx's lingering close does, so that clients which send the whole body before
    reading (Python's urllib, httpx) read the answer instead of a reset connection; a client that
    sent ``Expect: 100-continue`` (curl) gets the 413 at once instead of ``100 Continue``.
    Each read of the body must bring data within ``body_timeout`` seconds, so slow or stalled
    uploads (and a ``Content-Length`` larger than the body) are answered 408 and closed.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        metrics: Metrics,
        body_timeout: float = 30.0,
        discard_bytes: int = 0,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.body_timeout = body_timeout
        self.discard_bytes = discard_bytes

    async def _refuse(self, error: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
        self.metrics.child(self.metrics.rejections, error.reason).inc()
        await error_response(error, scope.get("path", ""))(scope, receive, send)

    async def _discard(self, receive: Receive, already: int = 0) -> bool:
        """Read and drop the rest of the body; True when it ended within the bounds."""
        seen = already
        while seen <= self.discard_bytes:
            try:
                async with asyncio.timeout(self.body_timeout):
                    message = await receive()
            except TimeoutError:
                return False
            if message["type"] != "http.request":
                return False
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            expects = headers.get("expect", "").lower() == "100-continue"
            ended = False
            if not expects and int(declared) <= self.discard_bytes:
                ended = await self._discard(receive)
            await self._refuse(_too_large(self.max_bytes, close=not ended), scope, receive, send)
            return

        received = 0
        body_done = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # e.g. waiting for a disconnect: no time limit
                return await receive()
            try:
                # asyncio.timeout, not wait_for: no extra task per message on the hot path.
                async with asyncio.timeout(self.body_timeout):
                    message = await receive()
            except TimeoutError:
                body_done = True
                raise _body_timeout(self.body_timeout) from None
            if message["type"] != "http.request":
                body_done = True
                return message
            body_done = not message.get("more_body", False)
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                ended = body_done or await self._discard(receive, received)
                body_done = True
                raise _too_large(self.max_bytes, close=not ended)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watching_send)
        except ApiError as exc:
            # Routes turn these errors into answers themselves; this catches readers outside our
            # routes (the mounted demo), which would otherwise answer 500.
            if started or exc.status not in (408, 413):
                raise
            await self._refuse(exc, scope, receive, send)


def _runs_a_model(scope: Scope) -> bool:
    """A request for inference: ``POST /classify`` or the Open Inference Protocol's infer."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return False
    path: str = scope["path"]
    return path == "/classify" or (path.startswith("/v2/models/") and path.endswith("/infer"))


class AdmissionMiddleware:
    """Refuse inference requests (503 with Retry-After) before their body is read or routed
    when no model could admit them now, and every request on a connection opened beyond
    ``ARINEXT_MAX_CONNECTIONS`` (:func:`arinext.service.http_limits.over_connection_limit`; that
    connection is then closed).

    The routes check admission again, and reserve, once the body is in (a slow upload must not
    hold a place in the queue); this early answer only makes a refusal cheap. Under a flood, the
    event loop that reads requests shares the cores with the work: a refusal that goes through
    routing, parameter validation and a 32 KB body read costs several times this, and every
    millisecond spent refusing is taken from the requests admitted.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        refusal: Callable[[], ApiError | None],
        metrics: Metrics,
        retry_after: int = 1,
    ):
        self.app = app
        self.refusal = refusal
        self.metrics = metrics
        self.too_many_connections = ApiError(
            503,
            "overloaded",
            "too many open connections; try again shortly",
            reason="connections",
            headers={"Retry-After": str(retry_after), "Connection": "close"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        error: ApiError | None = None
        if scope["type"] == "http" and over_connection_limit(scope):
            error = self.too_many_connections
        elif _runs_a_model(scope):
            error = self.refusal()
        if error is not None:
            self.metrics.child(self.metrics.rejections, error.reason).inc()
            await error_response(error, scope["path"])(scope, receive, send)
            return
        await self.app(scope, receive, send)


class RequestMetricsMiddleware:
    """Count and time requests by route template (never the raw path, which is unbounded)."""

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, routes: Callable[[], Sequence[BaseRoute]]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        # (method, path) -> route template: matching every route's regex costs more than the
        # rest of this middleware. Bounded, since raw paths are the client's to choose.
        self._endpoints: dict[tuple[str, str], str] = {}
        self._route_count = 0

    def _endpoint(self, scope: Scope) -> str:
        routes = self.routes()
        if len(routes) != self._route_count:  # routes were added (the demo mounts late)
            self._endpoints.clear()
            self._route_count = len(routes)
        key = (scope.get("method", ""), scope.get("path", ""))
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._match(scope, routes)
            if len(self._endpoints) >= _ENDPOINT_CACHE:
                self._endpoints.clear()
            self._endpoints[key] = endpoint
        return endpoint

    @staticmethod
    def _match(scope: Scope, routes: Sequence[BaseRoute]) -> str:
        partial = None
        for route in routes:
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
        metrics = self.metrics
        metrics.child(metrics.requests_received, endpoint).inc()
        start = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except ClientDisconnect:
            # Raised where a reader outside our routes (the demo) met the disconnect; the client
            # is gone, so there is nobody to answer.
            status = CLIENT_CLOSED
            logger.info("%s %s: the client closed the connection", scope["method"], endpoint)
        finally:
            metrics.child(metrics.requests, endpoint, str(status)).inc()
            metrics.child(metrics.request_duration, endpoint).observe(time.perf_counter() - start)


# What Starlette's RedirectResponse leaves unquoted in a Location.
_LOCATION_SAFE = ":/%#?=@[]!$&'()*+,;"


def _own_hosts(scope: Scope) -> set[str]:
    """The hosts absolute URLs to this server are built from: Starlette's (a valid ``Host``
    header, else the socket's address) and the raw ``Host`` header."""
    hosts = {URL(scope=scope).netloc, Headers(scope=scope).get("host", "")}
    return {host for host in hosts if host}


def relative_location(location: str, scope: Scope) -> str | None:
    """``location`` as a path on this server when it points at the request's own host (as
    built from ``Host``), else None. Leading slashes are collapsed to one, so the result can
    never be read as another host (``//evil.example``)."""
    lowered = location.lower()
    for host in _own_hosts(scope):
        for scheme in ("http", "https"):
            raw = f"{scheme}://{host}"
            for prefix in {raw, quote(raw, safe=_LOCATION_SAFE)}:
                rest = location[len(prefix) :]
                if lowered.startswith(prefix.lower()) and (not rest or rest[0] in "/?#"):
                    return "/" + rest.lstrip("/\\")
    return None


class RelativeRedirects:
    """Redirects to the request's own host become relative, so ``Host`` is never reflected.

    Starlette's slash redirect (``/demo`` to ``/demo/``, in our router and in the mounted Gradio
    app's) builds an absolute URL from the request's ``Host`` header: ``Host: evil.example`` was
    sent to ``http://evil.example/demo/``, which a cache in front could serve to everyone. A
    relative reference (RFC 9110, 10.2.2) stays wherever the client already is.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def relative_send(message: Message) -> None:
            if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
                location = Headers(raw=list(message.get("headers", []))).get("location")
                relative = relative_location(location, scope) if location else None
                if relative is not None:
                    message = {**message, "headers": list(message.get("headers", []))}
                    MutableHeaders(scope=message)["location"] = relative
            await send(message)

        await self.app(scope, receive, relative_send)
