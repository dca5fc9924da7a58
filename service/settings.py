"""Service configuration, read from ``ARINEXT_*`` environment variables.

The server knows artifact directories and operational limits, never audio settings: those
travel inside each artifact's manifest. Routes receive the settings through the
:func:`get_settings` dependency, so tests can swap them with ``app.dependency_overrides`` or by
passing a ``Settings`` to ``create_app``.
"""

from __future__ import annotations

import difflib
import os
import shlex
import string
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = [
    "EMBEDDED_FP32_MODEL_DIR",
    "EMBEDDED_MODEL_DIR",
    "MAX_TOP_K",
    "TEACH_COMMAND",
    "TEACH_FIELDS",
    "Settings",
]

# The default model, served when no models are configured: its int8 version. In a checkout
# ``service/default_model`` is a link to ``artifacts/speech-commands-b0-int8`` (where ``make
# default-model`` writes it); the wheel carries the files themselves there, so ``pip install
# 'arinext[serve]'`` serves it too.
EMBEDDED_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
# The same model in fp32, as trained (``artifacts/speech-commands-b0``): the source of the
# int8 version and the backbone ``arinext train-keywords`` builds on, which needs its weights.
EMBEDDED_FP32_MODEL_DIR = Path(__file__).resolve().parent / "default_model_fp32"

# Upper bound of the ``top_k`` query parameter: enough for any UI, small enough to keep answers
# for long clips with a timeline (one top-k per window) reasonably sized.
MAX_TOP_K = 50

# ARINEXT_* variables that are not settings: read by the tools that set them.
OTHER_VARIABLES = frozenset({"ARINEXT_TORCH_FIND_LINKS", "ARINEXT_BENCH_CLIP"})
# The demo's trainer (the ``train`` extra's command), and the fields its arguments may name.
TEACH_COMMAND = (
    "arinext train-keywords {phrase} --recordings {recordings} --out {out} --name {name} "
    "--progress json"
)
TEACH_FIELDS = frozenset({"phrase", "recordings", "out", "name"})
# Shortest repository token: long enough that guessing it over HTTP is hopeless.
_MIN_TOKEN_CHARS = 16
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
        description=(
            "comma-separated artifact directories; empty serves `ARINEXT_DEFAULT_MODEL_DIR`"
        ),
    )
    default_model_dir: Path = Field(
        default=EMBEDDED_MODEL_DIR,
        description=(
            "served when no models are configured and it exists: the embedded model (in a "
            "checkout a link to `artifacts/speech-commands-b0-int8`; the wheel carries "
            "the files)"
        ),
    )
    model_repository: Path | None = Field(
        default=None,
        description=(
            "a directory of artifact folders: set (with `ARINEXT_REPOSITORY_TOKEN`) to enable "
            "the Open Inference Protocol's model repository extension, `/v2/repository`, which "
            "loads and unloads them at run time; unset: the extension is off"
        ),
    )
    repository_token: SecretStr | None = Field(
        default=None,
        description=(
            "the bearer token `/v2/repository` requires (at least 16 characters); the server "
            "refuses to start with a repository and no token"
        ),
    )
    host: str = Field(default="127.0.0.1", description="bind address")
    port: int = Field(default=8000, ge=0, le=65535, description="port")
    max_upload_bytes: int = Field(
        default=20_000_000, gt=0, description="largest request body (413 above)"
    )
    max_duration_seconds: float = Field(
        default=600.0, gt=0, description="longest decoded audio (413 above, checked while decoding)"
    )
    max_windows: int = Field(
        default=4096, ge=1, description="windows one request may need per model (413 above)"
    )
    max_batch: int = Field(default=16, ge=1, description="windows per ONNX Runtime call")
    max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        description=(
            "optional hold to fill a batch; 0: an idle model runs a request at once, and what "
            "arrives while a batch runs forms the next"
        ),
    )
    queue_size: int = Field(
        default=256, ge=1, description="windows admitted per model; beyond it 503 at once"
    )
    max_queue_ms: float = Field(
        default=1000.0,
        ge=0,
        description=(
            "503 at once when the admitted work (windows x the measured cost or drain time "
            "per window) and one batch are estimated to take longer, and 503 for an admitted "
            "request whose batch would start later than this; 0: count bound only"
        ),
    )
    max_header_bytes: int = Field(
        default=32_768, ge=1024, description="request line and headers (431 above; `arinext serve`)"
    )
    max_headers: int = Field(
        default=100, ge=1, description="header fields (431 above; `arinext serve`)"
    )
    header_timeout_seconds: float = Field(
        default=10.0, gt=0, description="time to send the headers (408 after; `arinext serve`)"
    )
    body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="longest pause while the body is read (408 after)"
    )
    max_connections: int = Field(
        default=256,
        ge=1,
        description=(
            "open connections (`arinext serve`; a request on a connection opened beyond it is "
            "answered 503 and the connection closed)"
        ),
    )
    discard_bytes: int = Field(
        default=128_000_000,
        ge=0,
        description="body read and dropped after a 413 so the client can read it",
    )
    demo_temp_bytes: int = Field(
        default=24_000_000,
        ge=0,
        description="the demo's uploads kept on disk; the oldest are deleted beyond it",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        description=(
            "ONNX Runtime threads per session (0: one per physical core among the CPUs the "
            "process may run on, e.g. under `taskset`)"
        ),
    )
    worker_threads: int = Field(
        default=0,
        ge=0,
        description=(
            "threads that decode uploads and compute log-mels, an upload's and each "
            "live-stream window's (0: one per CPU the process may use); admitted requests are "
            "prepared in arrival order; on one CPU, the one thread also runs the batches"
        ),
    )
    worker_niceness: int = Field(
        default=5,
        ge=0,
        le=19,
        description=(
            "nice levels the decode, log-mel and inference threads run below the event loop, "
            "so a saturated server still reads requests and answers 503 within milliseconds; "
            "0 on a machine shared with other busy processes, which would otherwise "
            "out-prioritise them"
        ),
    )
    batch_scheduling: bool = Field(
        default=True,
        description=(
            "Linux: the event loop and the worker threads run under `SCHED_BATCH`, so a "
            "request that arrives while a batch runs waits for the batch's turn on the CPU to "
            "end (a few milliseconds) instead of preempting it: more throughput under load, "
            "503s a little later under overload (see Performance); `false` on a CPU shared "
            "with other busy processes, whose slices the server's threads would also wait for"
        ),
    )
    providers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        min_length=1,
        description="comma-separated ONNX Runtime execution providers, in order of preference",
    )
    backend: Literal["onnxruntime", "openvino"] = Field(
        default="onnxruntime",
        description=(
            "inference runtime: `onnxruntime` or `openvino` (the `openvino` extra; CPU only)"
        ),
    )
    precision: Literal["auto", "f32", "bf16"] = Field(
        default="auto",
        description=(
            "OpenVINO precision for fp32 artifacts: `auto` (bf16 where the CPU has it), "
            "`f32`, `bf16` (int8 artifacts, the embedded model among them, run as int8)"
        ),
    )
    drain_seconds: float = Field(
        default=5.0,
        ge=0,
        description="after SIGTERM, `/readyz` answers 503 this long, still serving, before the "
        "server closes its streams (1001 `shutting_down`) and stops",
    )
    retry_after_seconds: int = Field(default=1, ge=1, description="`Retry-After` on 503 answers")
    stream_max_concurrent: int = Field(
        default=32,
        ge=1,
        description="`WS /stream` connections served at once; the next is closed with 1013",
    )
    stream_idle_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="a stream with no message for this long is closed (1008 `idle_timeout`)",
    )
    stream_max_seconds: float = Field(
        default=3600.0, gt=0, description="audio one stream may send (1008 `stream_too_long`)"
    )
    stream_max_bytes_per_second: int = Field(
        default=1_000_000,
        gt=0,
        description="wire bytes per second of a stream, plus one second of burst (1008 `too_fast`)",
    )
    stream_max_speed: float = Field(
        default=1.5,
        gt=0,
        description="audio seconds a stream may send per wall-clock second (1008 `too_fast`)",
    )
    stream_burst_seconds: float = Field(
        default=2.0, ge=0, description="audio a stream may send ahead of that speed"
    )
    stream_max_message_bytes: int = Field(
        default=1_048_576,
        gt=0,
        description="largest single WebSocket message of a stream, text or binary (1009 "
        "`message_too_big`; `arinext serve`: also the WebSocket protocol's limit)",
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
    stream_batch_hold_ms: float = Field(
        default=20.0,
        ge=0,
        description="how long a stream's window may wait for windows of other streams on its "
        "model to fill its batch (until every such stream has one queued; at most half the "
        "max_queue_ms bound): fewer, fuller model runs cost less CPU per window, for up to this "
        "much more lag; 0: none",
    )
    stream_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="browser origins (scheme://host:port) that may open streams besides the "
        "server's own; '*' for any (comma-separated)",
    )
    demo: bool | None = Field(
        default=None,
        description=(
            "mount the Gradio demo at `/demo`; unset: when Gradio (the `demo` extra) is installed"
        ),
    )
    demo_teach: bool = Field(
        default=False,
        description=(
            "the demo's *Teach a word* tab: type a phrase, record it 3 to 5 times, and a "
            "keyword model for it is trained in a worker process and served beside the others; "
            "costs CPU (minutes of every core, at low priority) while it trains; needs the demo "
            "and, with the default command, the `train` extra"
        ),
    )
    demo_teach_command: str = Field(
        default=TEACH_COMMAND,
        description=(
            "the trainer the *Teach a word* tab runs, split like a shell line; `{phrase}`, "
            "`{recordings}` (a folder per phrase of the takes), `{out}` (the artifact to "
            "write) and `{name}` are filled in; `arinext` runs as `python -m arinext` of the "
            "server's interpreter"
        ),
    )
    demo_teach_timeout_seconds: float = Field(
        default=900.0, gt=0, description="a teaching run still going after this long is killed"
    )
    demo_teach_memory_bytes: int = Field(
        default=8_000_000_000,
        ge=100_000_000,
        description=(
            "address space each process of a teaching run may map (`RLIMIT_AS`: virtual "
            "memory, a little above what it touches); beyond it allocations fail and the run "
            "ends"
        ),
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="critical, error, warning, info or debug"
    )
    access_log: bool = Field(
        default=True,
        description=(
            "`arinext serve`: a log line per request (uvicorn's access log; plain `uvicorn` "
            "has `--no-access-log`); `false` where a proxy in front logs requests and "
            "`/metrics` counts them, for a little more throughput (see Performance)"
        ),
    )

    @field_validator("models", "providers", "stream_allowed_origins", mode="before")
    @classmethod
    def _split_comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("demo_teach_command")
    @classmethod
    def _a_trainer_command(cls, value: str) -> str:
        """Checked at start, not at the first Teach: it splits, and names only known fields."""
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split the command: {exc}") from None
        if not words:
            raise ValueError("the command is empty")
        fields = set()
        for word in words:
            try:
                fields |= {name for _, name, _, _ in string.Formatter().parse(word) if name}
            except ValueError as exc:
                raise ValueError(f"{word!r}: {exc}") from None
        if unknown := fields - TEACH_FIELDS:
            raise ValueError(f"unknown fields {sorted(unknown)}; known: {sorted(TEACH_FIELDS)}")
        if missing := {"phrase", "out"} - fields:
            raise ValueError(f"the command must name {sorted(missing)}")
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

    @model_validator(mode="after")
    def _repository_needs_a_token(self) -> Settings:
        """The repository loads and unloads models: never open to whoever can reach the port."""
        if self.model_repository is None:
            return self
        if self.repository_token is None:
            raise ValueError("ARINEXT_MODEL_REPOSITORY needs ARINEXT_REPOSITORY_TOKEN")
        if len(self.repository_token.get_secret_value()) < _MIN_TOKEN_CHARS:
            raise ValueError(
                f"ARINEXT_REPOSITORY_TOKEN must have at least {_MIN_TOKEN_CHARS} characters"
            )
        if not self.model_repository.is_dir():
            raise ValueError(f"ARINEXT_MODEL_REPOSITORY {self.model_repository} is not a directory")
        return self

    def model_dirs(self) -> list[Path]:
        """The configured artifacts, or the embedded default when none are configured."""
        if self.models:
            return list(self.models)
        if self.default_model_dir.is_dir():
            return [self.default_model_dir]
        return []

    def runtime_options(self) -> dict[str, Any]:
        """How every artifact is opened (``load_model``'s keywords): at start-up, by the model
        repository, for a taught word and by ``arinext predict`` alike."""
        return {
            "intra_op_threads": self.intra_op_threads,
            "providers": self.providers,
            "backend": self.backend,
            "precision": self.precision,
        }
