"""FastAPI's dependencies, in one place: what a route is given of the running app.

``async`` on purpose: FastAPI would run a plain ``def`` dependency in a worker thread, two
thread hops per request for nothing.
"""

from __future__ import annotations

from fastapi import Request

from arinext.service.inference import ModelService
from arinext.service.metrics import Metrics
from arinext.service.settings import Settings

__all__ = ["get_metrics", "get_model_service", "get_settings"]


async def get_settings(request: Request) -> Settings:
    """The settings the running app was created with."""
    return request.app.state.settings


async def get_model_service(request: Request) -> ModelService:
    """The running app's models."""
    return request.app.state.models


async def get_metrics(request: Request) -> Metrics:
    """The running app's metrics."""
    return request.app.state.metrics
