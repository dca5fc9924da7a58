"""Errors as HTTP answers: every refusal, ours or FastAPI's and Starlette's (validation, unknown
route), rendered as ``{"error": {"code": ..., "message": ...}}`` (under ``/v2``, that protocol's
``{"error": "message"}``), so clients parse one shape.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from arinext.service.errors import OIP_PREFIX, ApiError, insufficient_storage

__all__ = ["error_response", "install_error_handlers"]

logger = logging.getLogger(__name__)


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
