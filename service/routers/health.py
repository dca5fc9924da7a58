"""Operational endpoints: liveness, readiness and the Prometheus scrape."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from arinext.service.demo_uploads import temp_space_low
from arinext.service.dependencies import get_metrics, get_model_service, get_settings
from arinext.service.inference import ModelService
from arinext.service.metrics import Metrics
from arinext.service.settings import Settings

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    """Never depends on the models, so a slow model load does not get the process restarted."""
    return {"status": "alive"}


@router.get("/readyz", summary="Readiness: models verified and warmed up, not draining")
async def readyz(
    service: Annotated[ModelService, Depends(get_model_service)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> JSONResponse:
    """503 while loading, after a failed verification, without models, while draining, and
    when the temp space (where uploads are spooled) has room for fewer than two more uploads."""
    status = "draining" if service.draining else service.status
    ready = service.ready
    if ready and temp_space_low(2 * settings.max_upload_bytes):
        status, ready = "low_temp_space", False
    return JSONResponse(
        {"status": status, "heads": list(service.registry.heads)},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(metrics: Annotated[Metrics, Depends(get_metrics)]) -> Response:
    """The text exposition format of this app's private registry."""
    return Response(metrics.render(), media_type=metrics.content_type)
