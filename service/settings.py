"""Service configuration, read from ``ARINEXT_*`` environment variables.

The server knows artifact directories and operational limits, never audio settings: those
travel inside each artifact's manifest. Routes receive the settings through the
:func:`get_settings` dependency, so tests can swap them with ``app.dependency_overrides`` or by
passing a ``Settings`` to ``create_app``.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Request
from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["EMBEDDED_MODEL_DIR", "MAX_TOP_K", "Settings", "get_settings"]

# The default model, served when no models are configured. In a checkout ``service/default_model``
# is a link to ``artifacts/speech-commands-synth-b0`` (where ``make default-model`` writes it); the
# wheel carries the files themselves there, so ``pip install 'arinext[serve]'`` serves it too.
EMBEDDED_MODEL_DIR = Path(__file__).resolve().parent / "default_model"

# Upper bound of the ``top_k`` query parameter: enough for any UI, small enough to keep answers
# for long clips with a timeline (one top-k per window) reasonably sized.
MAX_TOP_K = 50

# ARINEXT_* variables that are not settings: read by the tools that set them.
OTHER_VARIABLES = frozenset({"ARINEXT_TORCH_FIND_LINKS", "ARINEXT_BENCH_CLIP"})
# Threads per CPU this process may run on beyond which a thread count is a mistake, not a choice.
_THREADS_PER_CPU = 4


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Settings(BaseSettings):
    """Everything an operator can tune; every field is ``ARINEXT_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="ARINEXT_", extra="ignore")

    models: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="artifact directories (comma-separated in the environment)",
    )
    default_model_dir: Path = Field(
        default=EMBEDDED_MODEL_DIR,
        description="served when 'models' is empty and this directory exists",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_upload_bytes: int = Field(default=20_000_000, gt=0)
    max_duration_seconds: float = Field(default=600.0, gt=0)
    max_windows: int = Field(
        default=4096, ge=1, description="windows one request may need per model (413 beyond)"
    )
    max_batch: int = Field(default=16, ge=1, description="windows per ONNX Runtime call")
    max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        description="optional hold to fill a batch; 0 runs at once what is queued (adaptive)",
    )
    queue_size: int = Field(
        default=256, ge=1, description="windows admitted per model (waiting or running)"
    )
    max_queue_ms: float = Field(
        default=1000.0,
        ge=0,
        description="refuse (503) when admitted work is estimated to take longer, or when an "
        "admitted request's batch would start later (0: no bound)",
    )
    max_header_bytes: int = Field(
        default=32_768, ge=1024, description="request line and headers (431 beyond)"
    )
    max_headers: int = Field(default=100, ge=1, description="header fields (431 beyond)")
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, description="time to send the request line and headers (408 after)"
    )
    body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="longest pause while the body is read (408 after)"
    )
    max_connections: int = Field(
        default=256, ge=1, description="open connections; requests on more are answered 503"
    )
    discard_bytes: int = Field(
        default=128_000_000,
        ge=0,
        description="body read and discarded after a 413 so the client can read the answer",
    )
    demo_temp_bytes: int = Field(
        default=24_000_000,
        ge=0,
        description="the demo's uploads kept on disk; the oldest are deleted beyond this",
    )
    intra_op_threads: int = Field(
        default=0, ge=0, description="0: one per physical core the process may run on"
    )
    worker_threads: int = Field(
        default=0,
        ge=0,
        description="threads decoding and computing log-mels (0: one per CPU); "
        "on one CPU, the one thread also runs the batches",
    )
    worker_niceness: int = Field(
        default=5,
        ge=0,
        le=19,
        description="nice levels the worker threads run below the event loop (see README)",
    )
    batch_scheduling: bool = Field(
        default=True,
        description="Linux: the server's threads run under SCHED_BATCH, so a request that "
        "arrives during a batch waits for the batch's turn on the CPU to end instead of "
        "preempting it (fewer context switches on a busy CPU; see README)",
    )
    providers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        min_length=1,
        description="ONNX Runtime execution providers in order of preference (comma-separated)",
    )
    backend: Literal["onnxruntime", "openvino"] = Field(
        default="onnxruntime",
        description="inference runtime; openvino needs the openvino extra and runs on the CPU",
    )
    precision: Literal["auto", "f32", "bf16"] = Field(
        default="auto",
        description="OpenVINO precision hint for fp32 graphs (auto: bf16 where the CPU has it)",
    )
    drain_seconds: float = Field(
        default=5.0,
        ge=0,
        description="after SIGTERM, /readyz answers 503 this long before the server stops",
    )
    retry_after_seconds: int = Field(default=1, ge=1, description="Retry-After on 503 answers")
    stream_max_concurrent: int = Field(
        default=32, ge=1, description="WebSocket /stream connections served at once"
    )
    stream_idle_timeout_seconds: float = Field(
        default=10.0, gt=0, description="a stream with no message for this long is closed"
    )
    stream_max_seconds: float = Field(
        default=3600.0, gt=0, description="audio one stream may send, in seconds"
    )
    stream_max_bytes_per_second: int = Field(
        default=1_000_000, gt=0, description="wire bytes per second of a stream (plus 1 s burst)"
    )
    stream_max_speed: float = Field(
        default=1.5, gt=0, description="audio seconds a stream may send per wall-clock second"
    )
    stream_burst_seconds: float = Field(
        default=2.0, ge=0, description="audio a stream may send ahead of its speed limit"
    )
    stream_max_message_bytes: int = Field(
        default=1_048_576,
        gt=0,
        description="largest single WebSocket message of a stream, text or binary "
        "(arinext serve: also the WebSocket protocol's limit)",
    )
    stream_min_speed: float = Field(
        default=0.5,
        ge=0,
        description="audio seconds a stream must send per wall-clock second after its grace "
        "period (0: no minimum)",
    )
    stream_grace_seconds: float = Field(
        default=5.0, ge=0, description="time a stream has before its minimum speed applies"
    )
    stream_max_lag_seconds: float = Field(
        default=1.0,
        gt=0,
        description="a window whose event would be sent later than this after its audio "
        "arrived is dropped instead (counted, and reported in a dropped event)",
    )
    stream_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="browser origins (scheme://host:port) that may open streams besides the "
        "server's own; '*' for any (comma-separated)",
    )
    demo: bool | None = Field(
        default=None,
        description="the Gradio demo at /demo; unset: on when Gradio is installed (the demo extra)",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = Field(
        default=True,
        description="arinext serve: a log line per request (uvicorn's access log); off where "
        "a proxy in front logs requests and /metrics counts them (README)",
    )

    @field_validator("models", "providers", "stream_allowed_origins", mode="before")
    @classmethod
    def _split_comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_variables(cls, data: Any) -> Any:
        """A misspelt ``ARINEXT_*`` variable is an error, not a limit silently at its default."""
        known = {f"ARINEXT_{name.upper()}" for name in cls.model_fields} | OTHER_VARIABLES
        unknown = sorted(
            n for n in os.environ if n.upper().startswith("ARINEXT_") and n.upper() not in known
        )
        if unknown:
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name.upper(), known, n=1)
                hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
            raise ValueError(f"unknown setting in the environment: {', '.join(hints)}")
        return data

    @field_validator("intra_op_threads", "worker_threads")
    @classmethod
    def _sane_thread_count(cls, value: int, info: ValidationInfo) -> int:
        most = _THREADS_PER_CPU * _cpus()
        if value > most:
            raise ValueError(
                f"{value} threads for the {_cpus()} CPUs this process may run on; at most "
                f"{most} (0: one per core)"
            )
        return value

    def model_dirs(self) -> list[Path]:
        """The configured artifacts, or the embedded default when none are configured."""
        if self.models:
            return list(self.models)
        if self.default_model_dir.is_dir():
            return [self.default_model_dir]
        return []


async def get_settings(request: Request) -> Settings:
    """Dependency: the settings the running app was created with (``async``: FastAPI would run
    a plain ``def`` dependency in a worker thread, two thread hops per request for nothing)."""
    return request.app.state.settings
