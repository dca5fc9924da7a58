"""The ``WS /stream`` protocol: the client's start message, close codes and refusals.

Every refusal is a :class:`StreamError`: a WebSocket close code (RFC 6455, section 7.4.1), a
stable reason code in the style of the HTTP errors' ``code``, and a message for people. The
protocol is documented in docs/api.md.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from arinext.model.labels import is_keyword
from arinext.service.decoding import MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from arinext.service.detection import (
    DEFAULT_HOP_SECONDS,
    DEFAULT_THRESHOLD,
    DEFAULT_VOTES,
    Debounce,
    Threshold,
    Votes,
)
from arinext.service.errors import ApiError
from arinext.service.settings import MAX_TOP_K

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INVALID_DATA",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "CLOSE_TRY_AGAIN",
    "CLOSE_UNSUPPORTED",
    "MAX_HOP_SECONDS",
    "MIN_HOP_SECONDS",
    "StartMessage",
    "StreamError",
    "invalid_audio",
    "invalid_start",
    "is_keyword",
]

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013

# A hop this short already means ten windows a second per stream; shorter ones cost the batcher
# more than any display can show.
MIN_HOP_SECONDS = 0.1
MAX_HOP_SECONDS = 10.0
_CLOSE_REASON_BYTES = 123  # the most a close frame can carry


class StreamError(Exception):
    """A stream the service closes: close code, reason code and a message for people."""

    def __init__(
        self, close_code: int, code: str, message: str, *, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.close_code = close_code
        self.code = code
        self.message = message
        self.reason = reason or code  # the label of arinext_rejections_total

    @property
    def close_reason(self) -> str:
        """The close frame's reason: ``code: message``, cut to what a close frame can carry."""
        text = f"{self.code}: {self.message}".encode()
        if len(text) <= _CLOSE_REASON_BYTES:
            return text.decode()
        return text[: _CLOSE_REASON_BYTES - 3].decode(errors="ignore") + "..."

    @classmethod
    def from_api_error(cls, error: ApiError) -> StreamError:
        """The stream form of an HTTP refusal (503 -> 1013 try again later, else 1008)."""
        close_code = CLOSE_TRY_AGAIN if error.status == 503 else CLOSE_POLICY
        if error.code in ("shutting_down", "model_unloaded", "model_replaced"):
            close_code = CLOSE_GOING_AWAY  # the server, or the stream's model, is going away
        return cls(close_code, error.code, error.message, reason=error.reason)


def invalid_start(message: str) -> StreamError:
    return StreamError(CLOSE_POLICY, "invalid_start", message)


def invalid_audio(message: str) -> StreamError:
    return StreamError(CLOSE_INVALID_DATA, "invalid_audio", message)


class StartMessage(BaseModel):
    """The client's first message: the audio format and what to answer."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["start"]
    format: Literal["s16le", "f32le", "webm"] = Field(
        description="interleaved little-endian PCM, or WebM (Opus/Vorbis) as MediaRecorder makes"
    )
    sample_rate: Annotated[int, Field(ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE)] | None = Field(
        default=None, description="Hz; required for PCM, checked against the stream for WebM"
    )
    channels: int = Field(default=1, ge=1, le=MAX_CHANNELS, description="PCM channels")
    hop: float = Field(
        default=DEFAULT_HOP_SECONDS, ge=MIN_HOP_SECONDS, le=MAX_HOP_SECONDS, description="s"
    )
    heads: list[str] | None = Field(default=None, description="default: every head")
    top_k: int = Field(default=5, ge=1, le=MAX_TOP_K)
    threshold: Threshold | None = Field(
        default=None,
        description="detection score one of a word's windows needs (default: each model's tuned "
        f"value, else {DEFAULT_THRESHOLD})",
    )
    votes: Votes | None = Field(
        default=None,
        description="consecutive windows that must agree on a word, one of them scoring at least "
        f"the threshold (default: each model's tuned value, else {DEFAULT_VOTES})",
    )
    debounce: Debounce | None = Field(
        default=None,
        description="a word voted again within this many seconds is one utterance "
        "(default: the model's window length, the span over which windows share audio)",
    )
