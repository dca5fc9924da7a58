"""FastAPI's dependencies, in one place: what a route is given of the running app.

``async`` on purpose: FastAPI would run a plain ``def`` dependency in a worker thread, two
thread hops per request for nothing.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from arinext.service.errors import ApiError
from arinext.service.inference import ModelService
from arinext.service.metrics import Metrics
from arinext.service.repository import ModelRepository
from arinext.service.settings import Settings

__all__ = ["get_metrics", "get_model_service", "get_settings", "require_repository_token"]

# Where a client learns which credentials a 401 wants (RFC 6750).
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="arinext-repository"'}


async def get_settings(request: Request) -> Settings:
    """The settings the running app was created with."""
    return request.app.state.settings


async def get_model_service(request: Request) -> ModelService:
    """The running app's models."""
    return request.app.state.models


async def get_metrics(request: Request) -> Metrics:
    """The running app's metrics."""
    return request.app.state.metrics


async def require_repository_token(request: Request) -> ModelRepository:
    """The model repository, for a request bearing its token (401 otherwise); compared in
    constant time, so the answer's timing tells nothing of how much of a guess was right."""
    settings: Settings = request.app.state.settings
    repository: ModelRepository = request.app.state.repository
    assert settings.repository_token is not None  # Settings refuse a repository without one
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    expected = settings.repository_token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise ApiError(
            401, "unauthorized", "a valid repository bearer token is required", headers=_CHALLENGE
        )
    return repository
