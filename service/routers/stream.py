"""``WS /stream``: live audio in, each window's top-k and keyword detections out.

The protocol (documented in docs/api.md): the client's first message is a JSON ``start`` with the
audio format; then binary audio messages; then ``{"type": "end"}``. The server answers ``ready``,
then ``window`` and ``detection`` events, and ``end`` with the stream's figures before closing
with 1000. A refusal sends an ``error`` event (the HTTP errors' ``{"code", "message"}``) and
closes with a WebSocket close code and ``code: message`` as the reason.

When the server stops (SIGTERM), each open stream gets the ``error`` event ``shutting_down``
and close 1001 before uvicorn drops the connections (:meth:`StreamHub.close_all`).

A browser sends ``Origin`` with the handshake: a stream opened from a page of another origin than
the server's own (or than ``stream_allowed_origins``) is refused before it is accepted (HTTP
403), so no web page can hold the server's stream slots from its visitors' browsers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from arinext.service.errors import ApiError
from arinext.service.inference import ModelService
from arinext.service.settings import Settings
from arinext.service.streams.protocol import (
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    StartMessage,
    StreamError,
)
from arinext.service.streams.session import StreamHub, StreamSession

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["stream"])


async def _receive(websocket: WebSocket) -> dict[str, Any]:
    """The next message; a client that went away raises ``WebSocketDisconnect``."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    return dict(message)


def _describe(exc: ValidationError) -> str:
    parts = []
    for item in exc.errors():
        where = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else item.get("msg", ""))
    return "; ".join(parts)


def origin_allowed(websocket: WebSocket, settings: Settings) -> bool:
    """No ``Origin`` (not a browser), the server's own, or one the settings allow."""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    allowed = settings.stream_allowed_origins
    if "*" in allowed or origin.rstrip("/") in (o.rstrip("/") for o in allowed):
        return True
    host = websocket.headers.get("host", "")
    return urlsplit(origin).netloc.lower() == host.lower() != ""


async def _read_start(websocket: WebSocket, settings: Settings) -> StartMessage:
    idle = settings.stream_idle_timeout_seconds
    try:
        message = await asyncio.wait_for(_receive(websocket), idle)
    except TimeoutError:
        raise StreamError(CLOSE_POLICY, "idle_timeout", f"no start message in {idle:g} s") from None
    text = message.get("text")
    size = len(text.encode()) if text is not None else len(message.get("bytes") or b"")
    if size > settings.stream_max_message_bytes:
        raise StreamError(
            CLOSE_TOO_BIG,
            "message_too_big",
            f"a message of {size} bytes; the limit is {settings.stream_max_message_bytes}",
        )
    if text is None:
        raise StreamError(
            CLOSE_POLICY,
            "invalid_start",
            'the first message must be JSON text: {"type": "start", "format": ...}',
        )
    try:
        return StartMessage.model_validate_json(text)
    except ValidationError as exc:
        raise StreamError(CLOSE_POLICY, "invalid_start", _describe(exc)) from None


async def _refuse(websocket: WebSocket, error: StreamError) -> None:
    """Send the ``error`` event and close with the error's code (the client may be gone)."""
    with contextlib.suppress(Exception):
        event = {"type": "error", "error": {"code": error.code, "message": error.message}}
        await websocket.send_json(event)
        await websocket.close(error.close_code, error.close_reason)


@router.websocket("/stream")
async def stream(websocket: WebSocket) -> None:
    """One live stream; see the module docstring and docs/api.md for the protocol."""
    hub: StreamHub = websocket.app.state.streams
    if not origin_allowed(websocket, hub.settings):
        logger.info("stream refused: Origin %r", websocket.headers.get("origin"))
        hub.metrics.closed.labels(reason="origin_not_allowed").inc()
        await websocket.close(CLOSE_POLICY)  # before accepting: the handshake gets a 403
        return
    await websocket.accept()
    outcome = "completed"
    with hub.handling():
        try:
            with hub.slot():
                await hub.until_stopping(_serve(websocket, hub))
        except StreamError as exc:
            outcome = exc.code
            metrics = websocket.app.state.models.metrics
            metrics.child(metrics.rejections, exc.reason).inc()
            logger.debug("stream closed with %d: %s", exc.close_code, exc.close_reason)
            await _refuse(websocket, exc)
        except WebSocketDisconnect:
            outcome = "disconnected"
        finally:
            hub.metrics.closed.labels(reason=outcome).inc()


async def _serve(websocket: WebSocket, hub: StreamHub) -> None:
    """An accepted stream from its ``start`` to its ``end`` and close."""
    service: ModelService = websocket.app.state.models
    try:
        service.ensure_serving()
    except ApiError as exc:
        raise StreamError.from_api_error(exc) from exc
    start = await _read_start(websocket, hub.settings)
    session = StreamSession(
        start=start,
        service=service,
        hub=hub,
        receive=lambda: _receive(websocket),
        send=websocket.send_json,
    )
    await websocket.send_json(session.describe())
    await session.run()
    await websocket.send_json({"type": "end", **session.stats.summary()})
    await websocket.close(CLOSE_NORMAL)
