"""The service's one error type: a refusal with its HTTP status and a stable code.

Framework-free, so the pipeline (and ``from arinext import Classifier``) raises it without
loading FastAPI; :mod:`service.http_errors` renders it, and FastAPI's own refusals, as the one
JSON shape clients parse. Each error also carries the ``reason`` label of
``arinext_rejections_total``.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["OIP_PREFIX", "ApiError"]

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
}


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
