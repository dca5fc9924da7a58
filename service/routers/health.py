"""Operational endpoints: liveness, readiness and the Prometheus scrape."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from service.inference import ModelService, get_model_service
from service.metrics import Metrics, get_metrics

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    """Never depends on the models, so a slow model load does not get the process restarted."""
    return {"status": "alive"}


@router.get("/readyz", summary="Readiness: models verified and warmed up, not draining")
async def readyz(service: Annotated[ModelService, Depends(get_model_service)]) -> JSONResponse:
    """503 while loading, after a failed verification, without models, and while draining."""
    status = "draining" if service.draining else service.status
    return JSONResponse(
        {"status": status, "heads": list(service.registry.heads)},
        status_code=200 if service.ready else 503,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(metrics: Annotated[Metrics, Depends(get_metrics)]) -> Response:
    """The text exposition format of this app's private registry."""
    return Response(metrics.render(), media_type=metrics.content_type)
