"""The service's one error type and its one JSON shape.

Every refusal, whether raised by our code or by FastAPI/Starlette (validation, unknown route), is
turned into an :class:`ApiError` and rendered by :func:`error_response` as
``{"error": {"code": ..., "message": ...}}``, so clients parse one shape. Each error also carries
the ``reason`` label of ``arinext_rejections_total``.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "OIP_PREFIX",
    "ApiError",
    "error_response",
    "install_error_handlers",
    "insufficient_storage",
]

logger = logging.getLogger(__name__)

# Default rejection reason per status; a raise site can be more specific (e.g. too_long).
_REASONS: dict[int, str] = {
    400: "bad_audio",
    404: "bad_request",
    405: "bad_request",
    408: "timeout",
    413: "too_large",
    415: "unsupported_media",
    422: "bad_request",
    431: "too_large",
    499: "client_closed",
    503: "not_ready",
    507: "no_temp_space",
}

# A full file system or an exhausted quota: the temp space, not the request, is at fault.
_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


# Routes of the Open Inference Protocol (service/routers/v2.py), whose errors have its shape.
OIP_PREFIX = "/v2"


class ApiError(Exception):
    """A request the service refuses, with the HTTP status and a stable machine-readable code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        reason: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(status, "bad_request" if status < 500 else "error")
        self.headers = dict(headers or {})


def error_response(error: ApiError, path: str = "") -> JSONResponse:
    """The JSON answer for ``error`` (also used by middleware that answers before routing).

    Under ``/v2`` (the Open Inference Protocol) the answer is that protocol's own shape,
    ``{"error": "message"}``, which its clients parse.
    """
    oip = path == OIP_PREFIX or path.startswith(f"{OIP_PREFIX}/")
    return JSONResponse(
        {"error": error.message}
        if oip
        else {"error": {"code": error.code, "message": error.message}},
        status_code=error.status,
        headers=error.headers,
    )


def insufficient_storage(exc: BaseException, retry_after: int) -> ApiError | None:
    """The 507 for ``exc`` when it says the temp space is full (ENOSPC, EDQUOT), else None.

    Uploads are spooled to the temp directory; when it fills, the request is not at fault and
    may succeed later, so clients get a retryable answer instead of a 500.
    """
    if not isinstance(exc, OSError) or exc.errno not in _STORAGE_ERRNOS:
        return None
    return ApiError(
        507,
        "insufficient_storage",
        "no temp space to store the upload; try again later",
        headers={"Retry-After": str(retry_after)},
    )


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for item in exc.errors():
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("query", "body"))
        parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else item.get("msg", ""))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Route ApiError and the framework's own exceptions through :func:`error_response`."""

    async def handle_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        metrics = request.app.state.metrics
        metrics.child(metrics.rejections, exc.reason).inc()
        logger.log(
            logging.INFO if exc.status == 499 else logging.DEBUG,
            "%s %s -> %d %s: %s",
            request.method,
            request.url.path,
            exc.status,
            exc.code,
            exc.message,
        )
        return error_response(exc, request.url.path)

    async def handle_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        error = ApiError(422, "invalid_parameter", _describe_validation(exc))
        return await handle_api_error(request, error)

    async def handle_http(request: Request, exc: Exception) -> JSONResponse:
        # Unknown routes and methods are not refused work, so they are not counted as rejections.
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        error = ApiError(exc.status_code, code, str(exc.detail), headers=exc.headers)
        return error_response(error, request.url.path)

    async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
        retry_after = request.app.state.settings.retry_after_seconds
        full = insufficient_storage(exc, retry_after)
        if full is not None:  # a writer we did not wrap; still not the request's fault
            logger.warning("%s %s: %s", request.method, request.url.path, exc)
            return await handle_api_error(request, full)
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        error = ApiError(500, "internal_error", "internal server error")
        return error_response(error, request.url.path)

    app.add_exception_handler(ApiError, handle_api_error)
    app.add_exception_handler(RequestValidationError, handle_validation)
    app.add_exception_handler(StarletteHTTPException, handle_http)
    app.add_exception_handler(Exception, handle_unexpected)
