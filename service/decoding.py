"""Uploaded bytes -> mono float PCM for the service: ``arinext.model.audio_io`` with HTTP statuses.

The decoding itself (allow-list, magic-byte sniffing, streaming resample, limits) lives in
``arinext.model.audio_io``, shared with training; this module only maps its refusals to the
service's one error type: unsupported formats are 415, corrupt or out-of-range audio 400, and audio
over the duration limit 413.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from arinext.model import audio_io
from arinext.model.audio_io import (
    MAX_CHANNELS,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    AudioError,
    DecodedAudio,
    ResampledAudio,
    resample,
)
from arinext.service.errors import ApiError

__all__ = [
    "MAX_CHANNELS",
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "DecodedAudio",
    "ResampledAudio",
    "api_error",
    "decode_audio",
    "decode_resampled",
    "resample",
    "sniff",
]

T = TypeVar("T")


def api_error(error: AudioError) -> ApiError:
    """The HTTP answer for refused audio."""
    if error.kind == "unsupported":
        return ApiError(415, "unsupported_media_type", error.message)
    if error.kind == "too_long":
        return ApiError(413, "audio_too_long", error.message, reason="too_long")
    if error.kind == "empty":
        return ApiError(400, "empty_audio", error.message)
    return ApiError(400, "invalid_audio", error.message)


def _mapped(call: Callable[[], T]) -> T:
    try:
        return call()
    except AudioError as exc:
        raise api_error(exc) from None


def sniff(data: bytes) -> str:
    """Name of the container ``data`` starts with; 415 when it is none we accept."""
    return _mapped(lambda: audio_io.sniff(data))


def decode_audio(data: bytes, max_seconds: float) -> DecodedAudio:
    """Decode an upload to mono float32 at its own rate, refusing more than ``max_seconds``."""
    return _mapped(lambda: audio_io.decode(data, max_seconds))


def decode_resampled(data: bytes, rates: Iterable[int], max_seconds: float) -> ResampledAudio:
    """Decode and resample an upload as one stream to each of ``rates`` (bounded memory)."""
    return _mapped(lambda: audio_io.decode_resampled(data, rates, max_seconds))
