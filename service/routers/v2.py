"""The Open Inference Protocol (KServe v2 / Triton) over REST, on the same pipeline as /classify.

``{name}`` is an artifact's name (the ``model`` field of ``/classify``'s answer). A request carries
exactly one of three inputs:

- ``audio`` (BYTES, shape ``[batch]``): encoded files, decoded exactly as ``/classify`` decodes;
- ``waveform`` (FP32, ``[batch, samples]``) with the ``sample_rate`` parameter (on the input or
  the request): PCM, resampled and windowed like a decoded file;
- ``logmel`` (FP32, ``[batch, 1, frames, mels]``): ready network inputs, one window per row.

Outputs are one FP32 tensor per head, ``[batch, classes]``: the clip-level probabilities
``/classify`` reports (the average over windows), or each row's probabilities for ``logmel``.
Triton's classification extension (``"parameters": {"classification": k}`` on a requested output)
turns a head into BYTES ``"score:index:label"`` strings, best first; Triton's binary tensor
extension (``Inference-Header-Content-Length``) carries tensors as raw bytes both ways, which is
what ``tritonclient`` sends. BYTES elements in plain JSON are base64 strings.

The JSON part of a request is validated against :mod:`arinext.service.v2_schema` (400 naming the
field), and the batch dimension is bounded before any work (413, like Triton's ``max_batch_size``):
a clip of ``audio`` or ``waveform`` needs at least one window of the queue, so a batch over
``queue_size`` could never be admitted; ``logmel`` rows are windows, bounded by ``max_windows``.
Every input goes through the model service's admission and batching, so limits, 503s and metrics are
those of ``/classify``; refusals are :class:`ApiError` exceptions, which the app's one handler
renders in the protocol's ``{"error": "message"}`` shape under ``/v2``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import math
import struct
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
import soundfile as sf
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from arinext.model.manifest import HeadSpec
from arinext.model.scores import probabilities
from arinext.service.dependencies import get_model_service, get_settings
from arinext.service.errors import ApiError, model_gone
from arinext.service.inference import ModelService
from arinext.service.loading import LoadedModel
from arinext.service.predict import classify, top_labels
from arinext.service.settings import Settings
from arinext.service.v2_schema import (
    InferenceRequest,
    RequestInput,
    RequestOutput,
    RequestParameters,
    openapi_body,
)

__all__ = ["router"]

router = APIRouter(prefix="/v2", tags=["open inference protocol"])

VERSION = "1"
HEADER_LENGTH = "inference-header-content-length"
BINARY_SIZE = "binary_data_size"
_PLATFORM = "onnxruntime_onnx"
_EXTENSIONS = ["classification", "binary_tensor_data"]
_INPUTS = ("audio", "waveform", "logmel")
# Each input's datatype and rank.
_LAYOUT = {"audio": ("BYTES", 1), "waveform": ("FP32", 2), "logmel": ("FP32", 4)}


def _bad(message: str) -> ApiError:
    return ApiError(400, "invalid_inference_request", message)


def _model(service: ModelService, name: str, version: str | None) -> LoadedModel:
    model = service.registry.models.get(name)
    if model is None:
        served = ", ".join(service.registry.models) or "none"
        raise ApiError(404, "unknown_model", f"unknown model {name!r}; served: {served}")
    if version not in (None, "", VERSION):
        raise ApiError(404, "unknown_version", f"model {name!r} has only version {VERSION}")
    return model


def _metadata(model: LoadedModel) -> dict[str, Any]:
    cfg = model.manifest.frontend
    return {
        "name": model.name,
        "versions": [VERSION],
        "platform": _PLATFORM,
        "inputs": [
            {"name": "audio", "datatype": "BYTES", "shape": [-1]},
            {
                "name": "waveform",
                "datatype": "FP32",
                "shape": [-1, -1],
                "parameters": {"sample_rate": "required, Hz"},
            },
            {
                "name": "logmel",
                "datatype": "FP32",
                "shape": [-1, 1, cfg.num_frames, cfg.n_mels],
                # What a client needs to compute these itself: the whole front-end, as in the
                # manifest, with the upper mel edge resolved (parameters hold no nulls).
                "parameters": cfg.resolved(),
            },
        ],
        "outputs": [
            {"name": head.name, "datatype": "FP32", "shape": [-1, len(head.labels)]}
            for head in model.manifest.heads
        ],
        "parameters": {"sample_rate": cfg.sample_rate, "sha256": model.manifest.sha256},
    }


# --- request parsing ----------------------------------------------------------------------------


def _describe(exc: ValidationError) -> str:
    """A validation error in one line, each problem prefixed with where it is."""
    parts = []
    for item in exc.errors(include_url=False)[:5]:
        if item["type"] == "json_invalid":
            return f"the request is not JSON: {item['msg']}"
        where = ".".join(str(p) for p in item["loc"])
        parts.append(f"{where}: {item['msg']}" if where else item["msg"])
    return "; ".join(parts)


def _split_body(request: Request, body: bytes) -> tuple[InferenceRequest, memoryview]:
    """The JSON header, validated, and the binary tensor data after it (empty without the
    extension)."""
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding != "identity":
        raise ApiError(415, "unsupported_media_type", f"Content-Encoding {encoding} not accepted")
    length = request.headers.get(HEADER_LENGTH)
    if length is None:
        header, binary = body, b""
    else:
        if not length.isdigit() or int(length) > len(body):
            raise _bad(f"{HEADER_LENGTH} {length!r} does not fit a body of {len(body)} bytes")
        header, binary = body[: int(length)], body[int(length) :]
    try:
        parsed = InferenceRequest.model_validate_json(header)
    except ValidationError as exc:
        raise _bad(_describe(exc)) from None
    return parsed, memoryview(binary)


def _bytes_elements(raw: memoryview, count: int) -> list[bytes]:
    """BYTES tensor data: each element is a 4-byte little-endian length and that many bytes."""
    if 4 * count > len(raw):
        raise _bad(f"BYTES data of {len(raw)} bytes cannot hold {count} elements")
    out: list[bytes] = []
    pos = 0
    while pos < len(raw):
        if len(out) == count:
            raise _bad(f"BYTES data holds more elements than the shape's {count}")
        if pos + 4 > len(raw):
            raise _bad("BYTES data ends inside an element's length")
        (size,) = struct.unpack_from("<I", raw, pos)
        if pos + 4 + size > len(raw):
            raise _bad("BYTES data ends inside an element")
        out.append(bytes(raw[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    if len(out) != count:
        raise _bad(f"BYTES data holds {len(out)} elements, the shape says {count}")
    return out


def _tensor(spec: RequestInput, binary: memoryview, offset: int) -> tuple[Any, int]:
    """An input's value (list of bytes for BYTES, float32 array for FP32) and the next offset."""
    name, datatype, shape = spec.name, spec.datatype, spec.shape
    count = math.prod(shape)
    size = spec.parameters.binary_data_size if spec.parameters else None
    if size is not None:
        if offset + size > len(binary):
            raise _bad(f"input {name!r}: {BINARY_SIZE} {size!r} exceeds the binary data")
        raw = binary[offset : offset + size]
        offset += size
        if datatype == "BYTES":
            return _bytes_elements(raw, count), offset
        if size != count * 4:
            raise _bad(f"input {name!r}: {size} bytes of FP32 data for shape {shape}")
        return np.frombuffer(raw, dtype="<f4").reshape(shape), offset
    if spec.data is None:
        raise _bad(f"input {name!r} has neither data nor {BINARY_SIZE}")
    if datatype == "BYTES":
        try:
            items = np.asarray(spec.data, dtype=object).reshape(-1).tolist()
        except ValueError:  # ragged nesting
            items = []
        if len(items) != count or not all(isinstance(i, str) for i in items):
            raise _bad(f"input {name!r}: expected {count} base64 strings")
        try:
            return [base64.b64decode(i, validate=True) for i in items], offset
        except binascii.Error as exc:
            raise _bad(f"input {name!r}: BYTES in JSON must be base64 ({exc})") from None
    try:
        array = np.asarray(spec.data, dtype=np.float32)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _bad(f"input {name!r}: FP32 data must be numbers ({exc})") from None
    if array.size != count:
        raise _bad(f"input {name!r}: {array.size} values for shape {shape}")
    return array.reshape(shape), offset


def _max_batch(name: str, settings: Settings) -> int:
    """The largest batch an input may have: see the module docstring."""
    return settings.max_windows if name == "logmel" else settings.queue_size


def _the_input(
    request: InferenceRequest, binary: memoryview, settings: Settings
) -> tuple[RequestInput, Any]:
    if len(request.inputs) != 1:
        raise _bad(f"send exactly one input, one of {', '.join(_INPUTS)}")
    spec = request.inputs[0]
    layout = _LAYOUT.get(spec.name)
    if layout is None:
        raise _bad(f"unknown input {spec.name!r}; inputs: {', '.join(_INPUTS)}")
    expected, rank = layout
    if spec.datatype != expected:
        raise _bad(f"input {spec.name!r} must be {expected}, got {spec.datatype!r}")
    if len(spec.shape) != rank or spec.shape[0] == 0:
        raise _bad(f"input {spec.name!r} must have {rank} dimensions and a batch > 0")
    most = _max_batch(spec.name, settings)
    if spec.shape[0] > most:
        raise ApiError(
            413,
            "batch_too_large",
            f"input {spec.name!r} has a batch of {spec.shape[0]}; this server takes at most {most}",
            reason="too_large",
        )
    value, used = _tensor(spec, binary, 0)
    if used != len(binary):
        raise _bad(f"{len(binary) - used} bytes of binary data belong to no input")
    return spec, value


# --- inference ----------------------------------------------------------------------------------


def _as_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """A waveform row as a float WAV: decoded by the upload path, losslessly, with its limits."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def _sample_rate(spec: RequestInput, request: InferenceRequest) -> int:
    for parameters in (spec.parameters, request.parameters):
        if parameters is not None and parameters.sample_rate is not None:
            return parameters.sample_rate
    raise _bad("a waveform input needs the sample_rate parameter (Hz)")


async def _clip_probabilities(
    service: ModelService,
    settings: Settings,
    model: LoadedModel,
    clips: Sequence[bytes],
    parameters: RequestParameters,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Per head, ``[batch, classes]`` clip probabilities (each clip is a ``/classify`` request)
    and the clips' detections, as a JSON list (one list of events per clip)."""
    heads = [head.name for head in model.manifest.heads]
    most = max(len(head.labels) for head in model.manifest.heads)
    tasks = [
        asyncio.ensure_future(
            classify(
                service,
                data,
                heads=heads,
                top_k=most,
                windows=False,
                max_duration=settings.max_duration_seconds,
                hop=parameters.hop,
                max_windows=settings.max_windows,
                threshold=parameters.threshold,
                votes=parameters.votes,
                debounce=parameters.debounce,
            )
        )
        for data in clips
    ]
    try:
        outcomes = await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    if any(
        p.model_sha256 != model.manifest.sha256 for o in outcomes for p in o.response.predictions
    ):
        raise model_gone(model.name, replaced=True)  # by the repository, while this waited
    out, detections = {}, {}
    for h, head in enumerate(model.manifest.heads):
        probs = np.zeros((len(clips), len(head.labels)), dtype=np.float32)
        for row, outcome in enumerate(outcomes):
            for scored in outcome.response.predictions[h].top_k:
                probs[row, scored.index] = scored.score
        out[head.name] = probs
        detections[head.name] = json.dumps(
            [[e.model_dump() for e in o.response.predictions[h].detections] for o in outcomes]
        )
    return out, detections


async def _window_probabilities(
    service: ModelService, model: LoadedModel, views: np.ndarray
) -> dict[str, np.ndarray]:
    """Per head, each log-mel row's probabilities, through the model's batcher."""
    cfg = model.manifest.frontend
    expected = (1, cfg.num_frames, cfg.n_mels)
    if views.ndim != 4 or views.shape[1:] != expected or len(views) == 0:
        raise _bad(f"logmel must be [batch>0, {', '.join(map(str, expected))}], got {views.shape}")
    if not np.isfinite(views).all():
        raise _bad("logmel holds NaN or infinite values")
    views = np.ascontiguousarray(views, dtype=np.float32)
    async with service.batcher_for(model).admit() as admission:
        results = await admission.run_all(views)
    return {
        head.name: probabilities(
            np.concatenate([r.logits[head.name] for r in results]), head.activation
        ).astype(np.float32)
        for head in model.manifest.heads
    }


# --- response -----------------------------------------------------------------------------------


def _classification(probs: np.ndarray, head: HeadSpec, k: int) -> np.ndarray:
    """Triton's "score:index:label" strings of the ``k`` best classes per row."""
    k = min(k, len(head.labels))
    rows = [[f"{s.score:f}:{s.index}:{s.label}" for s in top_labels(row, head, k)] for row in probs]
    return np.array(rows, dtype=object).reshape(len(probs), k)


def _serialise(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = [s.encode() for s in array.reshape(-1)]
        return b"".join(struct.pack("<I", len(p)) + p for p in parts)
    return np.ascontiguousarray(array, dtype="<f4").tobytes()


def _requested(request: InferenceRequest, model: LoadedModel) -> list[RequestOutput]:
    if request.outputs is None:
        return [RequestOutput(name=head.name) for head in model.manifest.heads]
    heads = {head.name for head in model.manifest.heads}
    for output in request.outputs:
        if output.name not in heads:
            raise _bad(f"unknown output {output.name!r}; outputs: {', '.join(heads)}")
    return request.outputs


def _response(
    request: InferenceRequest,
    model: LoadedModel,
    probs: dict[str, np.ndarray],
    outputs: list[RequestOutput],
    detections: dict[str, str],
) -> Response:
    """The protocol's response; an output of clips carries their detections (what was heard and
    when, as ``/classify`` reports it) in its ``detections`` parameter, a JSON list per clip."""
    binary_all = request.parameters.binary_data_output if request.parameters else False
    heads = {head.name: head for head in model.manifest.heads}
    described, blobs = [], []
    for output in outputs:
        head = heads[output.name]
        k = output.parameters.classification if output.parameters else None
        own = output.parameters.binary_data if output.parameters else None
        if k:
            array, datatype = _classification(probs[head.name], head, k), "BYTES"
        else:
            array, datatype = probs[head.name], "FP32"
        entry: dict[str, Any] = {
            "name": head.name,
            "datatype": datatype,
            "shape": list(array.shape),
        }
        parameters: dict[str, Any] = {}
        if head.name in detections:
            parameters["detections"] = detections[head.name]
        if binary_all if own is None else own:
            blob = _serialise(array, datatype)
            parameters[BINARY_SIZE] = len(blob)
            blobs.append(blob)
        else:
            entry["data"] = array.reshape(-1).tolist()
        if parameters:
            entry["parameters"] = parameters
        described.append(entry)
    body: dict[str, Any] = {"model_name": model.name, "model_version": VERSION}
    if request.id is not None:
        body["id"] = request.id
    body["outputs"] = described
    header = json.dumps(body).encode()
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


# --- routes -------------------------------------------------------------------------------------


@router.get("", summary="Server metadata")
async def server_metadata(request: Request) -> dict[str, Any]:
    """Name, version and the protocol extensions supported."""
    repository = ["model_repository"] if request.app.state.repository is not None else []
    return {
        "name": "arinext",
        "version": request.app.version,
        "extensions": [*_EXTENSIONS, *repository],
    }


@router.get("/health/live", summary="Server liveness")
async def server_live() -> dict[str, bool]:
    """200 whenever the process answers (like ``/healthz``)."""
    return {"live": True}


@router.get("/health/ready", summary="Server readiness")
async def server_ready(
    service: Annotated[ModelService, Depends(get_model_service)],
) -> JSONResponse:
    """200 when every model is loaded and warm and the server is not draining, else 503."""
    return JSONResponse({"ready": service.ready}, status_code=200 if service.ready else 503)


@router.get("/models/{name}", summary="Model metadata")
@router.get("/models/{name}/versions/{version}", include_in_schema=False)
async def model_metadata(
    service: Annotated[ModelService, Depends(get_model_service)],
    name: str,
    version: str | None = None,
) -> Response:
    """Inputs (``audio``, ``waveform``, ``logmel``: send one) and one output per head."""
    return JSONResponse(_metadata(_model(service, name, version)))


@router.get("/models/{name}/ready", summary="Model readiness")
@router.get("/models/{name}/versions/{version}/ready", include_in_schema=False)
async def model_ready(
    service: Annotated[ModelService, Depends(get_model_service)],
    name: str,
    version: str | None = None,
) -> Response:
    """200 when the server is ready and serves this model; 404 for a model it does not serve."""
    _model(service, name, version)
    ready = service.ready
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


@router.post("/models/{name}/infer", summary="Inference", openapi_extra=openapi_body())
@router.post("/models/{name}/versions/{version}/infer", include_in_schema=False)
async def infer(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    service: Annotated[ModelService, Depends(get_model_service)],
    name: str,
    version: str | None = None,
) -> Response:
    """One input (``audio``, ``waveform`` or ``logmel``) in; per-head probabilities out (and,
    for audio and waveform inputs, each clip's detections in the output's ``detections``
    parameter).

    Request parameters: ``hop`` (seconds between windows, audio and waveform inputs),
    ``threshold``, ``votes`` and ``debounce`` (the detections', as for ``/classify``),
    ``binary_data_output``; output parameters: ``classification`` (k), ``binary_data``.
    """
    service.ensure_serving()
    model = _model(service, name, version)
    parsed, binary = _split_body(request, await request.body())
    spec, value = _the_input(parsed, binary, settings)
    outputs = _requested(parsed, model)
    parameters = parsed.parameters or RequestParameters()
    detections: dict[str, str] = {}
    if spec.name == "logmel":
        probs = await _window_probabilities(service, model, value)
    else:
        if spec.name == "waveform":
            if value.ndim != 2 or 0 in value.shape:
                raise _bad(f"waveform must be [batch>0, samples>0], got {list(value.shape)}")
            rate = _sample_rate(spec, parsed)
            value = [_as_wav(row, rate) for row in value]
        probs, detections = await _clip_probabilities(service, settings, model, value, parameters)
    return _response(parsed, model, probs, outputs, detections)
