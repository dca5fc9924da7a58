"""Stream audio: incremental decoding of PCM and WebM messages, and windows every hop.

PCM messages are converted as they come; WebM (what a browser's MediaRecorder produces) is
demuxed and decoded by PyAV on a thread that reads from a blocking pipe, so each chunk yields the
audio it completes. :class:`Windower` resamples with soxr's streaming resampler (the same filter
as the one-shot path, so a stream's windows hold the samples ``/classify`` would cut) and cuts a
model's views every ``hop`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
import soxr

from arinext.model.audio_config import AudioConfig
from arinext.model.audio_io import planar_float
from arinext.model.frontend import window_start
from arinext.service.errors import ApiError
from arinext.service.streams.protocol import (
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED,
    StreamError,
    invalid_audio,
)
from arinext.service.workers import lower_thread_priority

__all__ = ["Decoder", "PcmDecoder", "WebmDecoder", "Window", "Windower"]

_PCM_TYPES: dict[str, np.dtype] = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
_WEBM_CODECS = frozenset({"opus", "vorbis"})


class PcmDecoder:
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
        if self.dtype.kind == "f" and not np.isfinite(frames).all():
            raise invalid_audio("the audio contains NaN or infinite samples")
        # Mono (the usual microphone) is a plain conversion, a fifth of the cost of a mean.
        if self.channels == 1:
            block = frames[:, 0].astype(np.float32)
        else:
            block = frames.mean(axis=1, dtype=np.float32)
        if self.dtype.kind != "f":
            block *= np.float32(1 / 32768)  # a power of two: exact, as the division
        return block

    async def finish(self) -> np.ndarray:
        if self._pending:
            raise invalid_audio(
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


class WebmDecoder:
    """WebM/Matroska (Opus or Vorbis) as chunks arrive, demuxed and decoded by PyAV on a thread.

    ``decode`` hands the chunk to the thread and waits until the thread asks for more bytes, so
    it returns everything the bytes so far could produce; at most one chunk is ever buffered.
    Compressed audio can expand a thousandfold (a megabyte of Opus silence is half an hour), so
    the thread stops with ``message_too_big`` once the audio not yet taken passes
    ``max_pending_samples``: the memory and event-loop work of one message stay bounded.
    """

    def __init__(
        self, declared_rate: int | None, *, niceness: int, max_pending_samples: int
    ) -> None:
        self.declared_rate = declared_rate
        self.niceness = niceness  # below the event loop, as the preparation threads
        self.max_pending_samples = max_pending_samples
        self._lock = threading.Lock()  # _blocks and _pending: filled by the thread, taken here
        self._pending = 0
        self.sample_rate: int | None = None
        self._loop = asyncio.get_running_loop()
        self._pipe = _Pipe(self._starved_from_thread)
        self._blocks: list[np.ndarray] = []
        self._error: StreamError | None = None
        self._waiting: tuple[int, asyncio.Future[None]] | None = None
        self._finished = asyncio.Event()
        self._thread: threading.Thread | None = None

    def seconds(self, num_bytes: int) -> None:
        """Compressed: the audio seconds are known only once decoded."""
        return None

    def _starved_from_thread(self, generation: int) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may already be closed at shutdown
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
        lower_thread_priority(self.niceness)
        try:
            with av.open(self._pipe, mode="r", format="matroska", metadata_errors="ignore") as box:
                if not box.streams.audio:
                    raise invalid_audio("the WebM stream has no audio track")
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
                        raise invalid_audio("the sample rate changes within the stream")
                    block = planar_float(frame)
                    if not np.isfinite(block).all():
                        raise invalid_audio("the audio contains NaN or infinite samples")
                    self._add(block.mean(axis=1, dtype=np.float32))
        except StreamError as exc:
            self._error = exc
        except ApiError as exc:
            self._error = invalid_audio(exc.message)
        except (av.FFmpegError, ValueError, EOFError, OSError) as exc:
            self._error = invalid_audio(f"cannot decode the WebM stream: {exc}")
        finally:
            self._ended_from_thread()

    def _add(self, mono: np.ndarray) -> None:
        with self._lock:
            self._blocks.append(mono)
            self._pending += len(mono)
            pending = self._pending
        if pending > self.max_pending_samples:
            raise StreamError(
                CLOSE_TOO_BIG,
                "message_too_big",
                f"a message decoded to more than {self.max_pending_samples} samples; "
                "send the audio in smaller messages",
            )

    def _check_rate(self, rate: int) -> None:
        if self.declared_rate is not None and rate != self.declared_rate:
            raise invalid_audio(
                f"wrong sample rate: the start message declared {self.declared_rate} Hz, "
                f"the WebM stream is {rate} Hz"
            )

    def _take(self) -> np.ndarray:
        if self._error is not None:
            raise self._error
        with self._lock:
            blocks, self._blocks = self._blocks, []
            self._pending = 0
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


Decoder = PcmDecoder | WebmDecoder


@dataclass
class Window:
    """A model's view of the stream: samples at the model's rate and where they lie."""

    start: int
    end: int
    samples: np.ndarray


class Windower:
    """Cuts one model's windows out of the stream, one every ``hop`` seconds.

    Window ``k`` covers ``[s, s + view)`` at the model's rate, ``s`` being ``k * hop`` on the
    front-end's frame grid (:func:`~arinext.model.frontend.window_start`, as ``/classify``
    cuts a long clip). At the end of the
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
        self._index = 0  # of the next window
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
            self._index += 1
            self._next_end = window_start(self._index, self.hop, self.cfg) + self.view
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
