"""``GET /models``: every served head with its labels and its model's settings and provenance."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from arinext.service.dependencies import get_model_service
from arinext.service.inference import ModelService

__all__ = ["router"]

router = APIRouter(tags=["models"])


class HeadInfo(BaseModel):
    """One head as a client needs to know it."""

    head: str
    model: str
    labels: list[str]
    activation: str
    architecture: str
    reparameterized: str
    frontend: dict[str, Any]
    sha256: str
    num_params: int
    gflops: float
    metrics: dict[str, Any]


class ModelsResponse(BaseModel):
    """All served heads; empty until the models are loaded."""

    ready: bool
    heads: list[HeadInfo]


@router.get("/models", response_model=ModelsResponse, summary="List the served heads")
async def list_models(
    service: Annotated[ModelService, Depends(get_model_service)],
) -> ModelsResponse:
    """Head names are what ``POST /classify?heads=`` accepts."""
    heads = []
    for model, head in service.registry.heads.values():
        manifest = model.manifest
        heads.append(
            HeadInfo(
                head=head.name,
                model=manifest.name,
                labels=head.labels,
                activation=head.activation,
                architecture=manifest.architecture,
                reparameterized=manifest.reparameterized,
                frontend=manifest.frontend.resolved(),
                sha256=manifest.sha256,
                num_params=manifest.num_params,
                gflops=manifest.gflops,
                metrics=manifest.metrics,
            )
        )
    return ModelsResponse(ready=service.ready, heads=heads)
