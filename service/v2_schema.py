"""The Open Inference Protocol's inference request as pydantic models.

``/v2/models/{name}/infer`` reads its body itself (Triton's binary tensor extension puts raw bytes
after the JSON header, which FastAPI cannot parse), then validates the JSON part with
:class:`InferenceRequest`: every malformed field is a 400 naming it, never a 500, and the schema
is published in the OpenAPI document (:func:`openapi_body`), so clients and fuzzers see it. The
batch dimension's bound depends on the server's limits and is checked after validation.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
)

from arinext.model.audio_io import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from arinext.service.detection import (
    DEFAULT_THRESHOLD,
    DEFAULT_VOTES,
    Debounce,
    Threshold,
    Votes,
)

__all__ = [
    "MAX_DIMENSION",
    "InferenceRequest",
    "InputParameters",
    "OutputParameters",
    "RequestInput",
    "RequestOutput",
    "RequestParameters",
    "openapi_body",
]

# A tensor dimension: Triton's are int64; no input here can be larger than a 32-bit size.
MAX_DIMENSION = 2**31 - 1
# The longest tensor rank any input has (logmel: [batch, 1, frames, mels]).
MAX_RANK = 4
_NAME = 256


def _number(value: object) -> object:
    """JSON numbers only: ``true`` is not 1 and ``"16000"`` is not 16000."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON number")
    return value


SampleRate = Annotated[
    int, BeforeValidator(_number), Field(ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE, description="Hz")
]


class _Parameters(BaseModel):
    """Protocol parameters: the ones read here are typed, others are accepted and ignored."""

    model_config = ConfigDict(extra="allow")


class RequestParameters(_Parameters):
    hop: Annotated[float, BeforeValidator(_number), Field(gt=0, le=3600)] | None = Field(
        default=None, description="seconds between windows (audio and waveform inputs)"
    )
    binary_data_output: StrictBool = Field(
        default=False, description="all outputs as raw bytes after the JSON header"
    )
    sample_rate: SampleRate | None = Field(default=None, description="of a waveform input")
    # The detections' settings, as /classify's query parameters (default: the model's tuned
    # operating point, else the service's).
    threshold: Annotated[Threshold, BeforeValidator(_number)] | None = Field(
        default=None,
        description="score a window's keyword needs "
        f"(default: the model's, else {DEFAULT_THRESHOLD})",
    )
    votes: Annotated[Votes, Strict()] | None = Field(
        default=None,
        description="consecutive windows agreeing on a word "
        f"(default: the model's, else {DEFAULT_VOTES})",
    )
    debounce: Annotated[Debounce, BeforeValidator(_number)] | None = Field(
        default=None, description="seconds within which a word heard again is one utterance"
    )


class InputParameters(_Parameters):
    binary_data_size: Annotated[StrictInt, Field(ge=0)] | None = Field(
        default=None, description="bytes of this input in the binary data after the header"
    )
    sample_rate: SampleRate | None = Field(default=None, description="of a waveform input")


class RequestInput(BaseModel):
    name: str = Field(max_length=_NAME, description="audio, waveform or logmel")
    datatype: str = Field(max_length=_NAME, description="BYTES (audio) or FP32")
    shape: list[Annotated[StrictInt, Field(ge=0, le=MAX_DIMENSION)]] = Field(
        max_length=MAX_RANK, description="the first dimension is the batch"
    )
    parameters: InputParameters | None = None
    data: list[Any] | None = Field(
        default=None, description="row-major values (base64 strings for BYTES)"
    )


class OutputParameters(_Parameters):
    classification: Annotated[StrictInt, Field(ge=1, le=MAX_DIMENSION)] | None = Field(
        default=None, description="the k best classes as 'score:index:label' strings"
    )
    binary_data: StrictBool | None = Field(default=None, description="this output as raw bytes")


class RequestOutput(BaseModel):
    name: str = Field(max_length=_NAME, description="a head of the model")
    parameters: OutputParameters | None = None


class InferenceRequest(BaseModel):
    """An inference request: exactly one input, and optionally which outputs to return."""

    id: str | None = Field(default=None, max_length=_NAME, description="echoed in the answer")
    parameters: RequestParameters | None = None
    inputs: list[RequestInput] = Field(
        max_length=8, description="exactly one of audio, waveform or logmel"
    )
    outputs: list[RequestOutput] | None = Field(
        default=None, max_length=64, description="default: every head, as FP32"
    )


def _inline(schema: Any, definitions: dict[str, Any]) -> Any:
    """``schema`` with its ``$ref``s to ``definitions`` replaced by the definitions (no cycles)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {k: _inline(v, definitions) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(v, definitions) for v in schema]
    return schema


def openapi_body() -> dict[str, Any]:
    """The route's ``openapi_extra``: the JSON body's schema, and the binary extension's form."""
    schema = InferenceRequest.model_json_schema()
    return {
        "requestBody": {
            "required": True,
            "description": "JSON, or with Triton's binary tensor extension the JSON request "
            "(Inference-Header-Content-Length bytes) followed by the tensors' bytes",
            "content": {
                "application/json": {"schema": _inline(schema, schema.get("$defs", {}))},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }
