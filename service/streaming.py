"""Live audio: one WebSocket stream in, scored windows and keyword detections out.

A stream is the same pipeline as ``POST /classify`` run as the audio arrives: incoming PCM (or a
browser's WebM/Opus, decoded incrementally by PyAV) is downmixed, resampled to each model's rate
with soxr's streaming resampler (the same filter as the one-shot path), cut into windows of the
model's view length every ``hop`` seconds, turned into log-mels by ``model.frontend`` and queued
on the model's batcher like any other request's windows, so streams and uploads share batches,
admission and metrics.

Each window's top-k per head is sent as it is scored; a ``detection`` is sent when a keyword wins
a window with at least ``threshold`` and it is not the same utterance as the previous detection
of that word (debounced). Labels starting with ``_`` (``_silence_``, ``_unknown_``) mean "no
keyword" and never detect.

Every refusal is a :class:`StreamError`: a WebSocket close code, a stable reason code (the same
style as the HTTP errors' ``code``) and a message. The protocol is documented in the README.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import av
import numpy as np
import soxr
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, ConfigDict, Field

from model.audio_config import AudioConfig
from model.audio_io import _planar_float as planar_float
from model.manifest import HeadSpec
from service.decoding import MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from service.errors import ApiError
from service.inference import LoadedModel, ModelService
from service.metrics import Metrics
from service.predict import _probabilities as probabilities
from service.predict import _top as top_labels
from service.predict import resolve_heads
from service.prepare import features
from service.settings import MAX_TOP_K, Settings

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INVALID_DATA",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "CLOSE_TRY_AGAIN",
    "CLOSE_UNSUPPORTED",
    "MIN_HOP_SECONDS",
    "Debouncer",
    "StartMessage",
    "StreamError",
    "StreamHub",
    "Windower",
    "is_keyword",
]

logger = logging.getLogger(__name__)

# WebSocket close codes (RFC 6455, section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013

# A hop this short already means ten windows a second per stream; shorter ones cost the batcher
# more than any display can show.
MIN_HOP_SECONDS = 0.1
MAX_HOP_SECONDS = 10.0
# Audio messages waiting for the stream's scorer; beyond that the socket is not read (TCP
# backpressure), so a stream's memory stays bounded whatever the client does.
_PENDING_MESSAGES = 32
_CLOSE_REASON_BYTES = 123  # the most a close frame can carry
_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_PCM_TYPES = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
_WEBM_CODECS = frozenset({"opus", "vorbis"})


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
        if error.code == "shutting_down":
            close_code = CLOSE_GOING_AWAY
        return cls(close_code, error.code, error.message, reason=error.reason)


def _invalid_start(message: str) -> StreamError:
    return StreamError(CLOSE_POLICY, "invalid_start", message)


def _invalid_audio(message: str) -> StreamError:
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
    hop: float = Field(default=0.25, ge=MIN_HOP_SECONDS, le=MAX_HOP_SECONDS, description="s")
    heads: list[str] | None = Field(default=None, description="default: every head")
    top_k: int = Field(default=5, ge=1, le=MAX_TOP_K)
    threshold: float = Field(default=0.5, gt=0, le=1, description="detection score")
    debounce: float | None = Field(
        default=None,
        ge=0,
        le=60,
        description="a word voted again within this many seconds is one utterance "
        "(default: the model's window length, the span over which windows share audio)",
    )


def is_keyword(label: str) -> bool:
    """Whether a label can be detected; ``_silence_``, ``_unknown_`` and the like cannot."""
    return not label.startswith("_")


# --- decoding ------------------------------------------------------------------------------------


class _PcmDecoder:
    """Interleaved PCM -> mono float32; a sample split across messages is kept for the next."""

    def __init__(self, fmt: str, channels: int, sample_rate: int) -> None:
        self.dtype = _PCM_TYPES[fmt]
        self.channels = channels
        self.sample_rate = sample_rate
        self.frame_bytes = self.dtype.itemsize * channels
        self._pending = b""

    def seconds(self, num_bytes: int) -> float:
        """Audio seconds carried by ``num_bytes``."""
        return num_bytes / (self.frame_bytes * self.sample_rate)

    async def decode(self, data: bytes) -> np.ndarray:
        data = self._pending + data
        usable = len(data) - len(data) % self.frame_bytes
        self._pending = data[usable:]
        frames = np.frombuffer(data[:usable], dtype=self.dtype).reshape(-1, self.channels)
        if self.dtype.kind == "f":
            if not np.isfinite(frames).all():
                raise _invalid_audio("the audio contains NaN or infinite samples")
            block = frames.mean(axis=1, dtype=np.float32)
        else:
            block = frames.mean(axis=1, dtype=np.float32) / np.float32(32768.0)
        return block

    async def finish(self) -> np.ndarray:
        if self._pending:
            raise _invalid_audio(
                f"the stream ended inside a sample frame ({len(self._pending)} bytes left over; "
                f"frames are {self.frame_bytes} bytes)"
            )
        return np.zeros(0, dtype=np.float32)

    def close(self) -> None:
        """Nothing to release."""


class _Pipe:
    """A blocking, non-seekable file for PyAV: ``read`` waits until bytes are fed or it ends.

    When it runs dry it reports the generation of the last bytes it was fed, so the event loop
    knows that everything fed so far has been demuxed and decoded.
    """

    def __init__(self, on_starved: Callable[[int], None]) -> None:
        self._cond = threading.Condition()
        self._buffer = bytearray()
        self._ended = False
        self._generation = 0
        self._on_starved = on_starved

    def feed(self, data: bytes) -> int:
        with self._cond:
            self._buffer += data
            self._generation += 1
            self._cond.notify()
            return self._generation

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify()

    def read(self, size: int = -1) -> bytes:
        with self._cond:
            while not self._buffer and not self._ended:
                self._on_starved(self._generation)
                self._cond.wait()
            size = len(self._buffer) if size < 0 else size
            out = bytes(self._buffer[:size])
            del self._buffer[:size]
            return out


class _WebmDecoder:
    """WebM/Matroska (Opus or Vorbis) as chunks arrive, demuxed and decoded by PyAV on a thread.

    ``decode`` hands the chunk to the thread and waits until the thread asks for more bytes, so
    it returns everything the bytes so far could produce; at most one chunk is ever buffered.
    """

    def __init__(self, declared_rate: int | None) -> None:
        self.declared_rate = declared_rate
        self.sample_rate: int | None = None
        self._loop = asyncio.get_running_loop()
        self._pipe = _Pipe(self._starved_from_thread)
        self._blocks: deque[np.ndarray] = deque()
        self._error: StreamError | None = None
        self._waiting: tuple[int, asyncio.Future[None]] | None = None
        self._finished = asyncio.Event()
        self._thread: threading.Thread | None = None

    def seconds(self, num_bytes: int) -> None:
        """Compressed: the audio seconds are known only once decoded."""
        return None

    def _starved_from_thread(self, generation: int) -> None:
        self._loop.call_soon_threadsafe(self._starved, generation)

    def _starved(self, generation: int) -> None:
        if self._waiting is not None and self._waiting[0] == generation:
            future = self._waiting[1]
            if not future.done():
                future.set_result(None)

    def _ended_from_thread(self) -> None:
        def ended() -> None:
            self._finished.set()
            if self._waiting is not None and not self._waiting[1].done():
                self._waiting[1].set_result(None)

        with contextlib.suppress(RuntimeError):  # the loop may already be closed at shutdown
            self._loop.call_soon_threadsafe(ended)

    def _run(self) -> None:
        try:
            with av.open(self._pipe, mode="r", format="matroska", metadata_errors="ignore") as box:
                if not box.streams.audio:
                    raise _invalid_audio("the WebM stream has no audio track")
                stream = box.streams.audio[0]
                context = stream.codec_context
                codec = context.name if context is not None else "unknown"
                if codec not in _WEBM_CODECS:
                    raise StreamError(
                        CLOSE_UNSUPPORTED,
                        "unsupported_codec",
                        f"codec {codec!r} in WebM; send Opus or Vorbis",
                    )
                for frame in box.decode(stream):
                    if self.sample_rate is None:
                        self._check_rate(frame.sample_rate)
                        self.sample_rate = frame.sample_rate
                    elif frame.sample_rate != self.sample_rate:
                        raise _invalid_audio("the sample rate changes within the stream")
                    block = planar_float(frame)
                    if not np.isfinite(block).all():
                        raise _invalid_audio("the audio contains NaN or infinite samples")
                    self._blocks.append(block.mean(axis=1, dtype=np.float32))
        except StreamError as exc:
            self._error = exc
        except ApiError as exc:
            self._error = _invalid_audio(exc.message)
        except (av.FFmpegError, ValueError, EOFError, OSError) as exc:
            self._error = _invalid_audio(f"cannot decode the WebM stream: {exc}")
        finally:
            self._ended_from_thread()

    def _check_rate(self, rate: int) -> None:
        if self.declared_rate is not None and rate != self.declared_rate:
            raise _invalid_audio(
                f"wrong sample rate: the start message declared {self.declared_rate} Hz, "
                f"the WebM stream is {rate} Hz"
            )

    def _take(self) -> np.ndarray:
        if self._error is not None:
            raise self._error
        blocks = [self._blocks.popleft() for _ in range(len(self._blocks))]
        return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)

    async def decode(self, data: bytes) -> np.ndarray:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="webm-decoder", daemon=True)
            self._thread.start()
        if not self._finished.is_set():
            future = self._loop.create_future()
            self._waiting = (self._pipe.feed(data), future)
            await future
        return self._take()

    async def finish(self) -> np.ndarray:
        self._pipe.end()
        if self._thread is not None:
            await self._finished.wait()
        return self._take()

    def close(self) -> None:
        """Let the decoding thread run out (it sees the end of the stream)."""
        self._pipe.end()


_Decoder = _PcmDecoder | _WebmDecoder


# --- windows and detections ----------------------------------------------------------------------


@dataclass
class Window:
    """A model's view of the stream: samples at the model's rate and where they lie."""

    start: int
    end: int
    samples: np.ndarray


class Windower:
    """Cuts one model's windows out of the stream, one every ``hop`` seconds.

    Window ``k`` covers ``[k * hop, k * hop + view)`` at the model's rate. At the end of the
    stream one more window ends exactly at the end of the audio (the whole stream, padded as
    ``/classify`` pads, when it is shorter than one view), so every sample is scored.
    """

    def __init__(self, cfg: AudioConfig, input_rate: int, hop_seconds: float) -> None:
        self.cfg = cfg
        self.view = cfg.clip_samples
        self.hop = max(1, round(hop_seconds * cfg.sample_rate))
        self._resampler = (
            soxr.ResampleStream(input_rate, cfg.sample_rate, 1, dtype="float32", quality="HQ")
            if input_rate != cfg.sample_rate
            else None
        )
        self._blocks: list[np.ndarray] = []  # joined only when a window is cut
        self._buffer = np.zeros(0, dtype=np.float32)
        self._offset = 0  # stream position of _buffer[0]
        self._next_end = self.view
        self._last_end = 0
        self.total = 0

    def push(self, block: np.ndarray, *, last: bool = False) -> list[Window]:
        """Add audio at the input rate; the windows it completes (all the rest when ``last``)."""
        if self._resampler is not None:
            block = self._resampler.resample_chunk(block, last=last)
        self._blocks.append(block.astype(np.float32, copy=False))
        self.total += len(block)
        if self.total < self._next_end and not last:
            return []
        self._buffer = np.concatenate([self._buffer, *self._blocks])
        self._blocks = []
        windows = []
        while self.total >= self._next_end:
            windows.append(self._cut(self._next_end - self.view, self._next_end))
            self._next_end += self.hop
        if last and self.total > self._last_end:
            windows.append(self._cut(max(0, self.total - self.view), self.total))
        # The next window starts after total - view; the closing one would start there.
        keep = max(0, self.total - self.view - self._offset)
        self._buffer = self._buffer[keep:]
        self._offset += keep
        return windows

    def _cut(self, start: int, end: int) -> Window:
        self._last_end = end
        samples = self._buffer[start - self._offset : end - self._offset].copy()
        return Window(start, end, samples)


@dataclass
class Detection:
    """A keyword heard: the window that first crossed the threshold."""

    head: str
    label: str
    score: float
    start: float
    end: float


@dataclass
class Debouncer:
    """Turns one head's per-window winners into one detection per utterance.

    A window votes for its top label when that label is a keyword and scores at least
    ``threshold``. A vote detects the word unless the same word had a vote less than
    ``debounce`` seconds of windows earlier (then it is the same utterance, heard again by an
    overlapping window). Other words voted in between do not split an utterance.
    """

    head: str
    hop: float
    threshold: float
    debounce: float
    _last_vote: dict[str, float] = field(default_factory=dict)

    def update(self, label: str, score: float, start: float, end: float) -> Detection | None:
        """Feed the next window's winner; a :class:`Detection` when a new utterance begins."""
        if not is_keyword(label) or score < self.threshold:
            return None
        previous = self._last_vote.get(label)
        self._last_vote[label] = end
        # Seconds of windows since that vote (consecutive windows are one hop apart: no gap).
        if previous is not None and end - previous - self.hop < self.debounce - 1e-9:
            return None
        return Detection(self.head, label, score, start, end)


# --- the service side ----------------------------------------------------------------------------


class StreamMetrics:
    """Prometheus collectors of the streams, in the app's registry."""

    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.active = Gauge("arinext_streams_active", "WebSocket streams open now", registry=r)
        self.closed = Counter(
            "arinext_streams_total",
            "Streams ended, by close reason code (completed, disconnected, or a refusal)",
            ["reason"],
            registry=r,
        )
        self.audio = Counter(
            "arinext_stream_audio_seconds_total", "Audio seconds received on streams", registry=r
        )
        self.windows = Counter(
            "arinext_stream_windows_total", "Stream windows scored, by model", ["model"], registry=r
        )
        self.detections = Counter(
            "arinext_stream_detections_total", "Keyword detections, by head", ["head"], registry=r
        )
        self.lag = Histogram(
            "arinext_stream_event_lag_seconds",
            "From the arrival of a window's last audio to its event being sent",
            buckets=_LAG_BUCKETS,
            registry=r,
        )


class StreamHub:
    """The app's streams: how many are open (bounded) and their metrics."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.limit = settings.stream_max_concurrent
        self.open = 0
        self.metrics = StreamMetrics(metrics)
        self._ids = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[int]:
        """Hold one of the ``stream_max_concurrent`` slots; refuse (1013) when none is free."""
        if self.open >= self.limit:
            raise StreamError(
                CLOSE_TRY_AGAIN,
                "too_many_streams",
                f"{self.open} streams are open, the limit is {self.limit}; try again later",
            )
        self.open += 1
        self._ids += 1
        self.metrics.active.set(self.open)
        try:
            yield self._ids
        finally:
            self.open -= 1
            self.metrics.active.set(self.open)


@dataclass
class _ModelTrack:
    """One model's part of a stream: its windower and the heads asked of it."""

    model: LoadedModel
    heads: list[HeadSpec]
    windower: Windower
    debouncers: dict[str, Debouncer]


@dataclass
class StreamStats:
    """Per-stream figures, sent in the closing ``end`` event."""

    audio_seconds: float = 0.0
    windows: int = 0
    detections: int = 0
    lags: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lags = np.asarray(self.lags) * 1000 if self.lags else np.zeros(1)
        return {
            "audio_seconds": round(self.audio_seconds, 3),
            "windows": self.windows,
            "detections": self.detections,
            "lag_ms": {
                "mean": round(float(lags.mean()), 2),
                "p99": round(float(np.percentile(lags, 99)), 2),
                "max": round(float(lags.max()), 2),
            },
        }


class _Limits:
    """Speed limits of one stream, measured from its start: wire bytes and audio seconds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started = time.monotonic()
        self.wire_bytes = 0
        self.audio_seconds = 0.0

    def add_bytes(self, count: int) -> None:
        s = self.settings
        if count > s.stream_max_message_bytes:
            raise StreamError(
                CLOSE_TOO_BIG,
                "message_too_big",
                f"a message of {count} bytes; the limit is {s.stream_max_message_bytes}",
            )
        self.wire_bytes += count
        allowed = s.stream_max_bytes_per_second * (time.monotonic() - self.started + 1.0)
        if self.wire_bytes > allowed:
            raise StreamError(
                CLOSE_POLICY,
                "too_fast",
                f"more than {s.stream_max_bytes_per_second} bytes per second",
            )

    def add_audio(self, seconds: float) -> None:
        s = self.settings
        self.audio_seconds += seconds
        if self.audio_seconds > s.stream_max_seconds:
            raise StreamError(
                CLOSE_POLICY,
                "stream_too_long",
                f"the stream passed its limit of {s.stream_max_seconds:g} s of audio",
            )
        elapsed = time.monotonic() - self.started
        if self.audio_seconds > s.stream_max_speed * elapsed + s.stream_burst_seconds:
            raise StreamError(
                CLOSE_POLICY,
                "too_fast",
                f"{self.audio_seconds:.1f} s of audio in {elapsed:.1f} s; streams may send "
                f"{s.stream_max_speed:g}x real time",
            )


_END = object()


class StreamSession:
    """One accepted stream after its start message: receive, decode, window, score, answer.

    Two tasks: the receiver reads messages (with the idle timeout and the speed limits) into a
    bounded queue; the scorer decodes, windows, scores and sends events in order.
    """

    def __init__(
        self,
        *,
        start: StartMessage,
        service: ModelService,
        hub: StreamHub,
        receive: Callable[[], Any],
        send: Callable[[dict[str, Any]], Any],
    ) -> None:
        self.start = start
        self.service = service
        self.hub = hub
        self.settings = hub.settings
        self._receive = receive
        self._send = send
        self.stats = StreamStats()
        self.limits = _Limits(self.settings)
        self._queue: asyncio.Queue[tuple[bytes, float] | object] = asyncio.Queue(_PENDING_MESSAGES)
        try:
            self.head_names = resolve_heads(service, start.heads)
        except ApiError as exc:
            raise _invalid_start(exc.message) from exc
        self.decoder = self._decoder()
        self.tracks: list[_ModelTrack] = []

    def _decoder(self) -> _Decoder:
        start = self.start
        if start.format == "webm":
            return _WebmDecoder(start.sample_rate)
        if start.sample_rate is None:
            raise _invalid_start(f"format {start.format!r} needs a sample_rate")
        return _PcmDecoder(start.format, start.channels, start.sample_rate)

    def _tracks(self, input_rate: int) -> list[_ModelTrack]:
        start = self.start
        by_model: dict[str, _ModelTrack] = {}
        for name in self.head_names:
            model, head = self.service.registry.heads[name]
            if model.name not in by_model:
                windower = Windower(model.manifest.frontend, input_rate, start.hop)
                by_model[model.name] = _ModelTrack(model, [], windower, {})
            track = by_model[model.name]
            track.heads.append(head)
            debounce = start.debounce
            if debounce is None:
                debounce = model.manifest.frontend.clip_seconds
            track.debouncers[head.name] = Debouncer(head.name, start.hop, start.threshold, debounce)
        return list(by_model.values())

    def describe(self) -> dict[str, Any]:
        """The ``ready`` event: what will be scored and how."""
        names = self.head_names
        models = {m.name: m for m in (self.service.registry.heads[n][0] for n in names)}
        return {
            "type": "ready",
            "format": self.start.format,
            "hop": self.start.hop,
            "threshold": self.start.threshold,
            "heads": names,
            "models": [
                {
                    "name": m.name,
                    "sha256": m.manifest.sha256,
                    "window": m.manifest.frontend.clip_seconds,
                    "sample_rate": m.manifest.frontend.sample_rate,
                }
                for m in models.values()
            ],
        }

    async def run(self) -> None:
        """Until the client's ``end`` (every window scored) or a :class:`StreamError`."""
        if isinstance(self.decoder, _PcmDecoder):
            self.tracks = self._tracks(self.decoder.sample_rate)
        receiver = asyncio.create_task(self._receive_loop(), name="stream-receive")
        scorer = asyncio.create_task(self._score_loop(), name="stream-score")
        try:
            done, _ = await asyncio.wait({receiver, scorer}, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises the first failure
            await scorer
        finally:
            for task in (receiver, scorer):
                task.cancel()
            await asyncio.gather(receiver, scorer, return_exceptions=True)
            self.decoder.close()

    async def _receive_loop(self) -> None:
        idle = self.settings.stream_idle_timeout_seconds
        while True:
            try:
                async with asyncio.timeout(idle):  # a timer, not a task per message
                    message = await self._receive()
            except TimeoutError:
                raise StreamError(
                    CLOSE_POLICY, "idle_timeout", f"no message for {idle:g} s"
                ) from None
            data = message.get("bytes")
            if data is None:
                if _is_end(message.get("text")):
                    await self._queue.put(_END)
                    return
                raise StreamError(
                    CLOSE_POLICY,
                    "invalid_message",
                    'after "start", send audio as binary messages and {"type": "end"} to finish',
                )
            if not data:
                continue
            self.limits.add_bytes(len(data))
            seconds = self.decoder.seconds(len(data))
            if seconds is not None:
                self.limits.add_audio(seconds)
            await self._queue.put((data, time.perf_counter()))

    async def _score_loop(self) -> None:
        while True:
            item = await self._queue.get()
            if item is _END:
                block = await self.decoder.finish()
                await self._windows(block, time.perf_counter(), last=True)
                return
            data, arrived = item
            block = await self.decoder.decode(data)
            await self._windows(block, arrived, last=False)

    async def _windows(self, block: np.ndarray, arrived: float, *, last: bool) -> None:
        if isinstance(self.decoder, _WebmDecoder):
            if self.decoder.sample_rate is None:
                if last:
                    raise _invalid_audio("the stream ended before any audio was decoded")
                return
            self.limits.add_audio(len(block) / self.decoder.sample_rate)
            if not self.tracks:
                self.tracks = self._tracks(self.decoder.sample_rate)
        self.stats.audio_seconds = self.limits.audio_seconds
        self.hub.metrics.audio.inc(len(block) / self._input_rate())
        for track in self.tracks:
            for window in track.windower.push(block, last=last):
                await self._score(track, window, arrived)

    def _input_rate(self) -> int:
        rate = self.decoder.sample_rate
        assert rate is not None
        return rate

    async def _score(self, track: _ModelTrack, window: Window, arrived: float) -> None:
        model = track.model
        cfg = model.manifest.frontend
        batcher = self.service.batchers[model.name]
        try:
            views = await asyncio.to_thread(features, window.samples, [0], cfg)
        except ApiError as exc:
            raise _invalid_audio(exc.message) from exc
        try:
            batcher.reserve()
        except ApiError as exc:
            raise StreamError.from_api_error(exc) from exc
        future: asyncio.Future | None = None
        try:
            future = await batcher.submit(views, reserved=True)
        finally:
            if future is None:
                batcher.cancel_reservation()
        try:
            result = await future
        except ApiError as exc:
            raise StreamError.from_api_error(exc) from exc
        finally:
            future.cancel()
        start = round(window.start / cfg.sample_rate, 6)
        end = round(window.end / cfg.sample_rate, 6)
        predictions = []
        detections = []
        for head in track.heads:
            probs = probabilities(result.logits[head.name][0], head)
            top = top_labels(probs, head, min(self.start.top_k, len(head.labels)))
            predictions.append(
                {"head": head.name, "top_k": [s.model_dump() for s in top]},
            )
            found = track.debouncers[head.name].update(top[0].label, top[0].score, start, end)
            if found is not None:
                detections.append(found)
        await self._send(
            {"type": "window", "model": model.name, "start": start, "end": end,
             "predictions": predictions}
        )  # fmt: skip
        for found in detections:
            await self._send({"type": "detection", **found.__dict__})
        lag = time.perf_counter() - arrived
        self.stats.windows += 1
        self.stats.detections += len(detections)
        self.stats.lags.append(lag)
        metrics = self.hub.metrics
        metrics.windows.labels(model=model.name).inc()
        metrics.lag.observe(lag)
        for found in detections:
            metrics.detections.labels(head=found.head).inc()


def _is_end(text: str | None) -> bool:
    if text is None:
        return False
    try:
        message = json.loads(text)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("type") == "end"
