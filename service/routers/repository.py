"""The Open Inference Protocol's model repository extension (KServe, Triton), admin only.

``POST /v2/repository/index`` lists the repository's models (``READY`` or ``UNAVAILABLE`` with
the reason), ``POST /v2/repository/models/{name}/load`` verifies and serves one (again: a reload
swaps the new artifact in), ``.../unload`` stops serving one. Mounted only when
``ARINEXT_MODEL_REPOSITORY`` is set, so a server without it neither answers nor advertises these
routes; every call needs ``Authorization: Bearer $ARINEXT_REPOSITORY_TOKEN``. The work is
:class:`arinext.service.repository.ModelRepository`'s; this module is its HTTP edge.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, StrictBool, ValidationError

from arinext.service.dependencies import require_repository_token
from arinext.service.errors import ApiError
from arinext.service.repository import ModelRepository

__all__ = ["router"]

router = APIRouter(prefix="/v2/repository", tags=["model repository"])

# These bodies are a few bytes of JSON; anything much larger is not one.
_MAX_BODY_BYTES = 4096
_VERSION = "1"
# What tritonclient's unload_model sends; there are no dependent models to unload.
_UNLOAD_PARAMETERS = frozenset({"unload_dependents"})

M = TypeVar("M", bound=BaseModel)


class IndexRequest(BaseModel):
    """``{"ready": true}`` lists only the models being served."""

    model_config = ConfigDict(extra="forbid")
    ready: StrictBool = False


class ControlRequest(BaseModel):
    """A load or unload request; Triton's ``parameters`` (a config or files to load instead of
    the folder's, ``unload_dependents``) have no meaning here."""

    model_config = ConfigDict(extra="forbid")
    parameters: dict[str, Any] | None = None


async def _body(request: Request, schema: type[M]) -> M:
    """The optional JSON body, validated (400 naming what is wrong)."""
    body = await request.body()
    if len(body) > _MAX_BODY_BYTES:
        raise ApiError(413, "body_too_large", f"at most {_MAX_BODY_BYTES} bytes of JSON")
    try:
        return schema.model_validate_json(body or b"{}")
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ApiError(
            400, "invalid_request", f"{where}: {first['msg']}" if where else first["msg"]
        ) from None


def _no_parameters(request: ControlRequest, allowed: frozenset[str] = frozenset()) -> None:
    if set(request.parameters or ()) - allowed:
        raise ApiError(
            400,
            "unsupported_parameters",
            "parameters are not supported: a model is loaded from its repository folder as it is",
        )


Repository = Annotated[ModelRepository, Depends(require_repository_token)]


@router.post("/index", summary="Repository index")
async def index(request: Request, repository: Repository) -> list[dict[str, str]]:
    """The repository's models (and those served from ``ARINEXT_MODELS``), by name."""
    query = await _body(request, IndexRequest)
    return [
        {"name": e.name, "version": _VERSION, "state": e.state, "reason": e.reason}
        for e in repository.index(ready_only=query.ready)
    ]


@router.post("/models/{name}/load", summary="Load or reload a model")
async def load(request: Request, repository: Repository, name: str) -> dict[str, str]:
    """Verify the folder's artifact as at start-up and serve it, in place of the model of its
    name if one is served; a refused artifact (400) leaves what was served as it was."""
    _no_parameters(await _body(request, ControlRequest))
    model = await repository.load(name)
    return {
        "name": model.name,
        "version": _VERSION,
        "state": "READY",
        "sha256": model.manifest.sha256,
    }


@router.post("/models/{name}/unload", summary="Unload a model")
async def unload(request: Request, repository: Repository, name: str) -> dict[str, str]:
    """Stop serving the model: requests it admitted finish, later ones get 404, open streams
    using it end at their next window (close 1001 ``model_unloaded``). The last model stays."""
    _no_parameters(await _body(request, ControlRequest), _UNLOAD_PARAMETERS)
    await repository.unload(name)
    return {"name": name, "version": _VERSION, "state": "UNAVAILABLE", "reason": "unloaded"}
