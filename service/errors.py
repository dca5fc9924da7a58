"""The service's one error type: a refusal with its HTTP status and a stable code.

Framework-free, so the pipeline (and ``from arinext import Classifier``) raises it without
loading FastAPI; :mod:`arinext.service.http_errors` renders it, and FastAPI's own refusals, as the
one JSON shape clients parse. Each error also carries the ``reason`` label of
``arinext_rejections_total``.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping

__all__ = ["OIP_PREFIX", "ApiError", "insufficient_storage", "model_gone"]

# Default rejection reason per status; a raise site can be more specific (e.g. too_long).
_REASONS: dict[int, str] = {
    400: "bad_audio",
    401: "unauthorized",
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


def model_gone(name: str, *, replaced: bool) -> ApiError:
    """The refusal of a request that resolved model ``name`` before the model repository
    unloaded it (404) or replaced it with a new artifact of its name (503: a retry gets the new
    one)."""
    if replaced:
        return ApiError(
            503,
            "model_replaced",
            f"model {name!r} was reloaded during the request; try again",
            reason="not_ready",
            headers={"Retry-After": "0"},
        )
    return ApiError(404, "model_unloaded", f"model {name!r} was unloaded")
