"""One live stream on the service side: limits, scoring on the shared batchers, events, metrics.

A stream is the same pipeline as ``POST /classify`` run as the audio arrives: decoded audio
(``arinext.service.streams.audio``) is cut into windows every ``hop`` seconds, turned into log-mels
by ``arinext.service.prepare.features`` (``arinext.model.frontend``) and queued on the model's
batcher like any other request's windows, with the same admission, so streams and uploads share
batches and limits. Each window's top-k per head is sent as it is scored, then any detection it
makes.

A stream's lag is bounded in time, not only in messages: a window whose event would go out more
than ``stream_max_lag_seconds`` after its audio arrived, or that the batcher refuses, is dropped
(counted, and reported to the client in a ``dropped`` event) and the stream goes on, so a client
gets current answers or none rather than answers seconds after the fact. Only audio keeps a
stream alive: the idle timer counts from the last audio, and after a grace period a stream must
send at least ``stream_min_speed`` x real time, so silent streams cannot hold the slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, ConfigDict, ValidationError

from arinext.model.frontend import IncrementalViews
from arinext.model.manifest import HeadSpec
from arinext.model.scores import probabilities
from arinext.service.batching import shutting_down
from arinext.service.detection import Debouncer, operating_point
from arinext.service.errors import ApiError
from arinext.service.inference import ModelService
from arinext.service.loading import LoadedModel
from arinext.service.metrics import Metrics
from arinext.service.predict import resolve_heads, top_labels
from arinext.service.settings import Settings
from arinext.service.streams.audio import Decoder, PcmDecoder, WebmDecoder, Window, Windower
from arinext.service.streams.protocol import (
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN,
    StartMessage,
    StreamError,
    invalid_audio,
    invalid_start,
)

__all__ = ["StreamHub", "StreamMetrics", "StreamSession", "StreamStats"]

logger = logging.getLogger(__name__)

# Audio messages waiting for the stream's scorer; beyond that the socket is not read (TCP
# backpressure), so a stream's memory stays bounded whatever the client does.
_PENDING_MESSAGES = 32
_LAGS_KEPT = 4096
_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


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
        self.dropped = Counter(
            "arinext_stream_windows_dropped_total",
            "Stream windows not scored or not sent: late (past the lag bound) or overloaded "
            "(refused by the batcher)",
            ["reason"],
            registry=r,
        )
        self.lag = Histogram(
            "arinext_stream_event_lag_seconds",
            "From the arrival of a window's last audio to its event being sent",
            buckets=_LAG_BUCKETS,
            registry=r,
        )


class StreamHub:
    """The app's streams: how many are open (bounded), their metrics, and their end on shutdown.

    uvicorn's own shutdown drops open WebSockets with 1012 and no word; :meth:`close_all` first
    ends each stream the documented way (an ``error`` event ``shutting_down``, close 1001).
    """

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.limit = settings.stream_max_concurrent
        self.open = 0
        self._scoring: dict[str, int] = {}  # open streams by the models they are scored on
        self.metrics = StreamMetrics(metrics)
        self._ids = 0
        self._stopping = asyncio.Event()
        self._handlers = 0
        self._no_handlers = asyncio.Event()
        self._no_handlers.set()

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        """Count an accepted stream until its handler is done, close frame sent included."""
        self._handlers += 1
        self._no_handlers.clear()
        try:
            yield
        finally:
            self._handlers -= 1
            if not self._handlers:
                self._no_handlers.set()

    async def until_stopping(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work``; if the server starts stopping first, cancel it and raise the stream's
        ``shutting_down`` close (1001)."""
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self._stopping.wait())
        stopped = False
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not task.done():  # the server is stopping, or this handler was cancelled
                stopped = True
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if stopped:
            raise StreamError.from_api_error(shutting_down())
        task.result()

    async def close_all(self, timeout: float) -> None:
        """End every stream, and refuse new ones, with ``shutting_down`` (1001); returns once
        their handlers are done or after ``timeout`` seconds."""
        self._stopping.set()
        if self._handlers:
            logger.info("closing %d stream(s): shutting down", self._handlers)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._no_handlers.wait()

    @contextlib.contextmanager
    def scoring(self, models: list[str]) -> Iterator[None]:
        """Count a stream as scored on ``models`` while it runs (:meth:`company`)."""
        for name in models:
            self._scoring[name] = self._scoring.get(name, 0) + 1
        try:
            yield
        finally:
            for name in models:
                self._scoring[name] -= 1
                if not self._scoring[name]:
                    del self._scoring[name]

    def company(self, model: str) -> int:
        """Open streams scored on ``model``: each has at most one window queued at a time, so
        no batch of that model's stream windows can hold more."""
        return self._scoring.get(model, 0)

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
    views: IncrementalViews  # log-mel frames shared by overlapping windows


@dataclass
class StreamStats:
    """Per-stream figures, sent in the closing ``end`` event.

    Lags are kept for the last ``_LAGS_KEPT`` windows (the p99), so an hour-long stream holds a
    bounded amount; the mean and maximum cover every window.
    """

    audio_seconds: float = 0.0
    windows: int = 0
    dropped: int = 0
    detections: int = 0
    lag_sum: float = 0.0
    lag_max: float = 0.0
    recent_lags: deque[float] = field(default_factory=lambda: deque(maxlen=_LAGS_KEPT))

    def add_lag(self, seconds: float) -> None:
        self.lag_sum += seconds
        self.lag_max = max(self.lag_max, seconds)
        self.recent_lags.append(seconds)

    def summary(self) -> dict[str, Any]:
        recent = np.asarray(self.recent_lags) if self.recent_lags else np.zeros(1)
        return {
            "audio_seconds": round(self.audio_seconds, 3),
            "windows": self.windows,
            "dropped": self.dropped,
            "detections": self.detections,
            "lag_ms": {
                "mean": round(1000 * self.lag_sum / max(self.windows, 1), 2),
                "p99": round(1000 * float(np.percentile(recent, 99)), 2),
                "max": round(1000 * self.lag_max, 2),
            },
        }


class _Limits:
    """Speed limits of one stream, measured from its start: wire bytes and audio seconds, at
    most ``stream_max_speed`` and, after the grace period, at least ``stream_min_speed`` x real
    time; and no more than the idle timeout without audio."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started = time.monotonic()
        self.last_audio = self.started
        self.wire_bytes = 0
        self.audio_seconds = 0.0

    def deadline(self) -> float:
        """When (``time.monotonic``) the stream is closed unless more audio comes."""
        s = self.settings
        due = self.last_audio + s.stream_idle_timeout_seconds
        if s.stream_min_speed > 0:
            slow = self.started + s.stream_grace_seconds + self.audio_seconds / s.stream_min_speed
            due = min(due, slow)
        return due

    def check_alive(self) -> None:
        """Raise the stream's close if it has been idle or too slow (see :meth:`deadline`)."""
        s = self.settings
        now = time.monotonic()
        idle = s.stream_idle_timeout_seconds
        if now - self.last_audio >= idle:
            raise StreamError(CLOSE_POLICY, "idle_timeout", f"no audio for {idle:g} s")
        elapsed = now - self.started
        owed = s.stream_min_speed * (elapsed - s.stream_grace_seconds)  # < 0 in the grace
        if s.stream_min_speed > 0 and self.audio_seconds < owed:
            raise StreamError(
                CLOSE_POLICY,
                "too_slow",
                f"{self.audio_seconds:.1f} s of audio in {elapsed:.1f} s; streams must "
                f"send at least {s.stream_min_speed:g}x real time",
            )

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
        if seconds > 0:
            self.last_audio = time.monotonic()
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


class _EndMessage(BaseModel):
    """``{"type": "end"}``, parsed without recursion (jiter), whatever the client nests."""

    model_config = ConfigDict(extra="allow")
    type: str


def _is_end(text: str) -> bool:
    try:
        return _EndMessage.model_validate_json(text).type == "end"
    except ValidationError:
        return False


class _Drops:
    """Windows dropped since the last ``dropped`` event: how many, and the span they cover."""

    def __init__(self) -> None:
        self.count = 0
        self.start = 0.0
        self.end = 0.0
        self.reported_at = time.monotonic()

    def add(self, start: float, end: float) -> None:
        if not self.count:
            self.start = start
        self.count += 1
        self.end = end

    def event(self) -> dict[str, Any]:
        """The ``dropped`` event for what is pending, which it clears."""
        event = {"type": "dropped", "windows": self.count, "start": self.start, "end": self.end}
        self.count = 0
        self.reported_at = time.monotonic()
        return event


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
            self.head_names = resolve_heads(service.registry, start.heads)
        except ApiError as exc:
            raise invalid_start(exc.message) from exc
        # The stream's models, resolved once: the repository may unload or replace them while
        # it runs, and its next window is then refused (``ModelService.batcher_for``).
        self.selected = [service.registry.heads[name] for name in self.head_names]
        self.decoder = self._decoder()
        self.tracks: list[_ModelTrack] = []
        self._drops = _Drops()

    def _decoder(self) -> Decoder:
        start = self.start
        if start.format == "webm":
            return WebmDecoder(
                start.sample_rate,
                niceness=self.service.worker_niceness,
                # As many samples as the largest message of 16-bit mono PCM carries.
                max_pending_samples=self.settings.stream_max_message_bytes // 2,
            )
        if start.sample_rate is None:
            raise invalid_start(f"format {start.format!r} needs a sample_rate")
        return PcmDecoder(start.format, start.channels, start.sample_rate)

    def _tracks(self, input_rate: int) -> list[_ModelTrack]:
        start = self.start
        by_model: dict[str, _ModelTrack] = {}
        for model, head in self.selected:
            if model.name not in by_model:
                windower = Windower(model.manifest.frontend, input_rate, start.hop)
                by_model[model.name] = _ModelTrack(
                    model, [], windower, {}, IncrementalViews(model.manifest.frontend)
                )
            track = by_model[model.name]
            track.heads.append(head)
            debounce = start.debounce
            if debounce is None:
                debounce = model.manifest.frontend.clip_seconds
            threshold, votes = operating_point(model.manifest, start.threshold, start.votes)
            track.debouncers[head.name] = Debouncer(
                head.name, start.hop, threshold, debounce, votes=votes
            )
        return list(by_model.values())

    def describe(self) -> dict[str, Any]:
        """The ``ready`` event: what will be scored and how."""
        names = self.head_names
        models = {model.name: model for model, _ in self.selected}
        points = {
            name: operating_point(m.manifest, self.start.threshold, self.start.votes)
            for name, m in models.items()
        }
        # The threshold, and the vote count, that the stream's models share (null where they
        # differ: each model's entry has its own).
        thresholds = {threshold for threshold, _ in points.values()}
        counts = {votes for _, votes in points.values()}
        threshold = thresholds.pop() if len(thresholds) == 1 else None
        votes = counts.pop() if len(counts) == 1 else None
        return {
            "type": "ready",
            "format": self.start.format,
            "hop": self.start.hop,
            "threshold": threshold,
            "votes": votes,
            "heads": names,
            "models": [
                {
                    "name": m.name,
                    "sha256": m.manifest.sha256,
                    "window": m.manifest.frontend.clip_seconds,
                    "sample_rate": m.manifest.frontend.sample_rate,
                    "threshold": points[m.name][0],
                    "votes": points[m.name][1],
                }
                for m in models.values()
            ],
        }

    async def run(self) -> None:
        """Until the client's ``end`` (every window scored) or a :class:`StreamError`."""
        with self.hub.scoring(sorted({model.name for model, _ in self.selected})):
            await self._run()

    async def _run(self) -> None:
        if isinstance(self.decoder, PcmDecoder):
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
        while True:
            wait = max(0.0, self.limits.deadline() - time.monotonic())
            try:
                async with asyncio.timeout(wait):  # a timer, not a task per message
                    message = await self._receive()
            except TimeoutError:
                self.limits.check_alive()  # WebM audio may have been decoded meanwhile
                continue
            data = message.get("bytes")
            if data is None:
                text = message.get("text") or ""
                self.limits.add_bytes(len(text.encode()))
                if _is_end(text):
                    await self._queue.put(_END)
                    return
                raise StreamError(
                    CLOSE_POLICY,
                    "invalid_message",
                    'after "start", send audio as binary messages and {"type": "end"} to finish',
                )
            if not data:
                continue  # no audio: not activity either
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
                if self._drops.count:
                    await self._send(self._drops.event())
                return
            data, arrived = cast(tuple[bytes, float], item)
            block = await self.decoder.decode(data)
            await self._windows(block, arrived, last=False)

    async def _windows(self, block: np.ndarray, arrived: float, *, last: bool) -> None:
        if isinstance(self.decoder, WebmDecoder):
            if self.decoder.sample_rate is None:
                if last:
                    raise invalid_audio("the stream ended before any audio was decoded")
                return
            self.limits.add_audio(len(block) / self.decoder.sample_rate)
            if not self.tracks:
                self.tracks = self._tracks(self.decoder.sample_rate)
        self.stats.audio_seconds = self.limits.audio_seconds
        self.hub.metrics.audio.inc(len(block) / self._input_rate())
        max_lag = self.settings.stream_max_lag_seconds
        for track in self.tracks:
            for window in track.windower.push(block, last=last):
                if time.perf_counter() - arrived > max_lag:
                    await self._drop(track, window, "late")
                else:
                    await self._score(track, window, arrived)

    async def _drop(self, track: _ModelTrack, window: Window, reason: str) -> None:
        """Count a window that gets no event; tell the client at most once a second."""
        rate = track.model.manifest.frontend.sample_rate
        self._drops.add(round(window.start / rate, 6), round(window.end / rate, 6))
        self.stats.dropped += 1
        self.hub.metrics.dropped.labels(reason=reason).inc()
        if time.monotonic() - self._drops.reported_at >= 1.0:
            await self._send(self._drops.event())

    def _input_rate(self) -> int:
        rate = self.decoder.sample_rate
        assert rate is not None
        return rate

    async def _result(self, track: _ModelTrack, window: Window) -> Any:
        """The window's batch result, or None when the batcher refused it."""
        try:  # admission first, as for /classify: a refused window costs no work
            batcher = self.service.batcher_for(track.model)
            admission = batcher.admit()
        except ApiError as exc:
            if exc.code != "overloaded":
                raise StreamError.from_api_error(exc) from exc
            return None  # dropped; the next window may be admitted
        async with admission:
            began = time.perf_counter()
            try:
                # On the service's preparation threads, as /classify's log-mels: niced below
                # the event loop and bounded (on one CPU, the thread that runs the batches).
                views, cpu = await self.service.prepare_on_workers(
                    _timed_features, track.views, window
                )
            except ApiError as exc:
                if exc.code == "shutting_down":
                    raise StreamError.from_api_error(exc) from exc
                raise invalid_audio(exc.message) from exc
            self.service.metrics.stages["features"].observe(time.perf_counter() - began)
            batcher.observe_prepare(cpu, 1)  # the admission's estimate of a window's cost
            try:
                company = self.hub.company(track.model.name)
                return await admission.run(views, self._batch_hold(company), company)
            except ApiError as exc:
                if exc.code != "overloaded":
                    raise StreamError.from_api_error(exc) from exc
                return None

    def _batch_hold(self, company: int) -> float:
        """How long the window may wait for other streams' windows to fill its batch: none
        when this is the only stream on its model (nobody else's window will come)."""
        return self.settings.stream_batch_hold_ms / 1000 if company > 1 else 0.0

    async def _score(self, track: _ModelTrack, window: Window, arrived: float) -> None:
        model = track.model
        cfg = model.manifest.frontend
        # The window's whole budget: a window still waiting for its features or its batch when
        # its answer would be late is given up, so the stream's scorer never falls behind.
        budget = self.settings.stream_max_lag_seconds - (time.perf_counter() - arrived)
        try:
            async with asyncio.timeout(budget):
                result = await self._result(track, window)
        except TimeoutError:
            await self._drop(track, window, "late")
            return
        if result is None:
            await self._drop(track, window, "overloaded")
            return
        start = round(window.start / cfg.sample_rate, 6)
        end = round(window.end / cfg.sample_rate, 6)
        predictions = []
        detections = []
        for head in track.heads:
            probs = probabilities(result.logits[head.name][0], head.activation)
            top = top_labels(probs, head, min(self.start.top_k, len(head.labels)))
            predictions.append(
                {"head": head.name, "top_k": [s.model_dump() for s in top]},
            )
            found = track.debouncers[head.name].update(top[0].label, top[0].score, start, end)
            if found is not None:
                detections.append(found)
        if self._drops.count:
            await self._send(self._drops.event())
        await self._send(
            {"type": "window", "model": model.name, "start": start, "end": end,
             "predictions": predictions}
        )  # fmt: skip
        for found in detections:
            await self._send({"type": "detection", **found.__dict__})
        lag = time.perf_counter() - arrived
        self.stats.windows += 1
        self.stats.detections += len(detections)
        self.stats.add_lag(lag)
        metrics = self.hub.metrics
        metrics.windows.labels(model=model.name).inc()
        metrics.lag.observe(lag)
        for found in detections:
            metrics.detections.labels(head=found.head).inc()


def _timed_features(views: IncrementalViews, window: Window) -> tuple[np.ndarray, float]:
    """One window's network input, computing only the frames earlier windows did not, and the
    CPU seconds it took (as /classify's preparation); 400 when samples overflow the features."""
    began = time.thread_time()
    with np.errstate(over="ignore", invalid="ignore"):  # absurd amplitudes are refused below
        view = views.view(window.samples, window.start)
    if not np.isfinite(view).all():
        raise ApiError(400, "invalid_audio", "sample values are out of range (features overflow)")
    return view[None, None], time.thread_time() - began
