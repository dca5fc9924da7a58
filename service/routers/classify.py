"""``POST /classify``: one clip in, each requested head's top-k out."""

from __future__ import annotations

import contextlib
import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from arinext.service.dependencies import get_model_service, get_settings
from arinext.service.detection import (
    DEFAULT_HOP_SECONDS,
    DEFAULT_THRESHOLD,
    DEFAULT_VOTES,
    Debounce,
    Threshold,
    Votes,
)
from arinext.service.errors import ApiError, insufficient_storage
from arinext.service.http_limits import received_at
from arinext.service.inference import ModelService
from arinext.service.predict import ClassifyResponse, classify
from arinext.service.settings import MAX_TOP_K, Settings

__all__ = ["ClassifyQuery", "add_route"]

logger = logging.getLogger(__name__)


FORM_FIELD = "file"
_RAW_TYPES = ("audio/", "video/", "application/octet-stream")

# The body is read by hand (multipart or raw), so the accepted forms are declared for /docs here.
_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": "The clip, as multipart field `file` or as the raw body.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FORM_FIELD],
                    "properties": {FORM_FIELD: {"type": "string", "format": "binary"}},
                }
            },
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
            "video/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": text}
    for status, text in {
        400: "empty, undecodable or invalid audio",
        404: "unknown head",
        413: "upload or decoded duration over the limit",
        415: "unsupported media type or codec",
        422: "bad parameters",
        503: "overloaded or not ready (with Retry-After)",
        507: "no temp space to spool the upload (with Retry-After)",
    }.items()
}


async def read_clip(request: Request) -> bytes:
    """The uploaded bytes, from the multipart field ``file`` or the raw body.

    A client that goes away mid-upload is answered 499 (client closed request), as nginx logs it,
    so it is neither a server error nor a silent success in the metrics.
    """
    try:
        return await _read_clip(request)
    except ClientDisconnect:
        raise ApiError(
            499, "client_closed", "the client closed the connection during the upload"
        ) from None


class _BodyReads:
    """``receive`` that remembers whether the body has ended."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.ended = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.ended = True
        return message

    async def discard(self, limit: int) -> None:
        """Read and drop the rest of the body, up to ``limit`` bytes (the body-limit middleware
        bounds each read in time and the whole in size)."""
        seen = 0
        with contextlib.suppress(ApiError, ClientDisconnect):
            while not self.ended and seen <= limit:
                seen += len((await self.receive()).get("body", b""))


async def _read_form(request: Request) -> FormData:
    """The multipart form; a file over Starlette's spool size is written to the temp directory.

    When that is full the answer is a retryable 507, given after the rest of the body is read
    (bounded) so that clients which send the whole body first read it.
    """
    body = _BodyReads(request.receive)
    try:
        return await Request(request.scope, body.receive).form(max_files=1, max_fields=16)
    except StarletteHTTPException as exc:
        raise ApiError(400, "invalid_multipart", str(exc.detail)) from exc
    except OSError as exc:
        settings: Settings = request.app.state.settings
        error = insufficient_storage(exc, settings.retry_after_seconds)
        if error is None:
            raise
        logger.warning("%s %s: %s", request.method, request.url.path, exc)
        await body.discard(settings.discard_bytes)
        raise error from None


async def _read_clip(request: Request) -> bytes:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        form = await _read_form(request)
        try:
            upload = form.get(FORM_FIELD)
            if not isinstance(upload, UploadFile):
                raise ApiError(
                    422,
                    "missing_file",
                    f"send the clip as the multipart file field {FORM_FIELD!r}",
                )
            return await upload.read()
        finally:
            await form.close()
    if media_type.startswith(_RAW_TYPES):
        return await request.body()
    raise ApiError(
        415,
        "unsupported_media_type",
        f"Content-Type {media_type or '(none)'!r} not accepted; send multipart/form-data, "
        "audio/*, video/* or application/octet-stream",
    )


class ClassifyQuery(BaseModel):
    """The query parameters of ``POST /classify``, validated in one call on the lean path."""

    heads: str | None = Field(None, description="comma-separated head names; default: every head")
    top_k: int = Field(5, ge=1, le=MAX_TOP_K, description="labels per head")
    windows: bool = Field(False, description="add each window's top-k (a timeline)")
    hop: float | None = Field(
        None,
        gt=0,
        le=3600,
        description="window step in seconds for a clip longer than one window (default "
        f"{DEFAULT_HOP_SECONDS}, as a live stream)",
    )
    threshold: Threshold | None = Field(
        None,
        description="score a window's keyword needs to be detected (default: the model's tuned "
        f"value, else {DEFAULT_THRESHOLD})",
    )
    votes: Votes | None = Field(
        None,
        description="consecutive windows that must agree on a word (a recording of fewer "
        f"windows needs as many as it has; default: the model's tuned value, else {DEFAULT_VOTES})",
    )
    debounce: Debounce | None = Field(
        None,
        description="a word heard again within this many seconds is one utterance "
        "(default: the model's window length)",
    )


def _query(request: Request) -> ClassifyQuery:
    """The query parameters as FastAPI would validate them (the last of repeated keys wins, as
    with FastAPI's scalar parameters), with FastAPI's own error type and locations."""
    try:
        return ClassifyQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        errors = [{**error, "loc": ("query", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from None


class _LeanRoute(APIRoute):
    """An ``APIRoute`` that calls the ``/classify`` endpoint itself, without FastAPI's
    per-request parameter and dependency solving and its per-request wrappers (two exit stacks
    and an exception handler; the app's exception middleware renders errors the same way).

    On one core, that is time taken from the model (``benchmarks/service_ab.py`` measures it;
    docs/performance.md has the figures). OpenAPI still
    comes from the endpoint's signature. While any dependency is overridden
    (``app.dependency_overrides``, in tests) requests go through FastAPI's own handler, so
    overrides keep their full meaning.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in (self.methods or ()) or scope["app"].dependency_overrides:
            await super().handle(scope, receive, send)  # 405, or FastAPI's own solving
            return
        request = Request(scope, receive, send)
        response = await self.endpoint(
            request=request,
            settings=await get_settings(request),
            service=await get_model_service(request),
            query=_query(request),
        )
        await response(scope, receive, send)


async def classify_clip(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    service: Annotated[ModelService, Depends(get_model_service)],
    query: Annotated[ClassifyQuery, Query()],
) -> Response:
    """What was heard and when (``detections``, one per utterance of a keyword), and the
    clip-level top-k: the probabilities of windows covering the whole clip, averaged."""
    service.ensure_serving()
    heads = query.heads
    requested = [h.strip() for h in heads.split(",") if h.strip()] if heads else None
    data = await read_clip(request)
    outcome = await classify(
        service,
        data,
        heads=requested,
        top_k=query.top_k,
        windows=query.windows,
        max_duration=settings.max_duration_seconds,
        hop=query.hop,
        max_windows=settings.max_windows,
        received=received_at(request.scope),
        threshold=query.threshold,
        votes=query.votes,
        debounce=query.debounce,
    )
    # Serialised here, once: returned as a model, FastAPI would validate it again first.
    return Response(
        outcome.response.model_dump_json(exclude_none=True), media_type="application/json"
    )


def add_route(app: FastAPI) -> None:
    """Serve ``POST /classify`` from ``app``'s own route table.

    Not through an included ``APIRouter``: FastAPI matches an included router's routes through
    a wrapper of its own, which costs this route measurable throughput (docs/performance.md).
    """
    app.router.add_api_route(
        "/classify",
        classify_clip,
        methods=["POST"],
        tags=["classify"],
        response_model=ClassifyResponse,
        response_model_exclude_none=True,
        openapi_extra=_BODY_DOC,
        responses=_ERRORS,
        summary="Classify an audio clip (or the audio track of a video)",
        route_class_override=_LeanRoute,
    )
