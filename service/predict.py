"""The prediction pipeline shared by the HTTP API and the demo: bytes in, scored labels out.

decode -> downmix -> resample to each model's rate -> windows over the whole clip -> log-mel
(``model.frontend``, the same code training used) -> batched ONNX inference -> per-window
probabilities -> clip-level average and top-k.

Windows: a clip no longer than a model's view is one window (the front-end pads it); a longer
clip is covered by ``ceil((n - clip) / clip) + 1`` evenly spaced views, so the hop is at most
the view length and the last view ends exactly at the end of the clip.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

from model.audio_config import AudioConfig
from model.frontend import clip_view, view_starts
from model.manifest import HeadSpec
from service.decoding import DecodedAudio, decode_audio, resample
from service.errors import ApiError
from service.inference import LoadedModel, ModelService

__all__ = [
    "ClassifyResponse",
    "HeadPrediction",
    "Outcome",
    "ScoredLabel",
    "WindowPrediction",
    "classify",
    "resolve_heads",
    "window_starts",
]


class ScoredLabel(BaseModel):
    """One class and its probability."""

    label: str
    index: int = Field(description="position of the label in the head's output")
    score: float


class WindowPrediction(BaseModel):
    """The top-k of one window of the clip."""

    start: float = Field(description="seconds")
    end: float = Field(description="seconds")
    top_k: list[ScoredLabel]


class HeadPrediction(BaseModel):
    """A head's clip-level top-k (window probabilities averaged) and optional timeline."""

    head: str
    model: str
    model_sha256: str
    top_k: list[ScoredLabel]
    windows: list[WindowPrediction] | None = None


class ClassifyResponse(BaseModel):
    """The answer to ``POST /classify``."""

    duration: float = Field(description="seconds of decoded audio")
    sample_rate: int = Field(description="the file's own sample rate")
    channels: int = Field(description="channels in the file (they are averaged)")
    predictions: list[HeadPrediction]
    timing_ms: dict[str, float] = Field(
        description="decode, resample, features, queue, inference and total, in milliseconds"
    )


@dataclass
class Outcome:
    """The response plus the decoded audio, which the demo draws."""

    response: ClassifyResponse
    audio: DecodedAudio


@dataclass
class _Timing:
    decode: float = 0.0
    resample: float = 0.0
    features: float = 0.0
    queue: float = 0.0
    inference: float = 0.0

    def as_ms(self, total: float) -> dict[str, float]:
        values = {**self.__dict__, "total": total}
        return {name: round(seconds * 1000, 3) for name, seconds in values.items()}


def resolve_heads(service: ModelService, heads: Sequence[str] | None) -> list[str]:
    """The requested head names in order (all when none are given); 404 for unknown ones."""
    known = service.registry.heads
    if not heads:
        return list(known)
    selected = list(dict.fromkeys(heads))
    unknown = [h for h in selected if h not in known]
    if unknown:
        raise ApiError(
            404,
            "unknown_head",
            f"unknown head(s) {', '.join(unknown)}; served: {', '.join(known)}",
        )
    return selected


def window_starts(num_samples: int, cfg: AudioConfig) -> list[int]:
    """Start samples of the windows covering a clip of ``num_samples`` at the model's rate."""
    clip = cfg.clip_samples
    if num_samples <= clip:
        return [0]
    return view_starts(num_samples, cfg, views=math.ceil((num_samples - clip) / clip) + 1)


def _features(samples: np.ndarray, starts: Sequence[int], cfg: AudioConfig) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # absurd amplitudes are refused below
        views = np.stack([clip_view(samples, start, cfg) for start in starts])[:, None]
    if not np.isfinite(views).all():
        raise ApiError(400, "invalid_audio", "sample values are out of range (features overflow)")
    return views


def _probabilities(logits: np.ndarray, head: HeadSpec) -> np.ndarray:
    x = logits.astype(np.float64)
    if head.activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    x = np.exp(x - x.max(axis=-1, keepdims=True))
    return x / x.sum(axis=-1, keepdims=True)


def _top(probs: np.ndarray, head: HeadSpec, k: int) -> list[ScoredLabel]:
    order = np.argsort(-probs, kind="stable")[:k]
    return [ScoredLabel(label=head.labels[i], index=int(i), score=float(probs[i])) for i in order]


def _chunks(starts: list[int], size: int) -> list[list[int]]:
    """The first window alone (it uses the request's reservation), then ``size`` at a time."""
    return [starts[:1]] + [starts[i : i + size] for i in range(1, len(starts), size)]


async def _run_model(
    service: ModelService,
    model: LoadedModel,
    samples: np.ndarray,
    timing: _Timing,
    reservations: set[str],
) -> tuple[list[int], dict[str, np.ndarray]]:
    """Window starts and per-window logits of every head of ``model``.

    Features are computed a chunk at a time, so a long clip never holds all its log-mels, and
    the next chunk is computed while the previous one waits for or runs inference.
    """
    cfg = model.manifest.frontend
    batcher = service.batchers[model.name]
    starts = window_starts(len(samples), cfg)
    stage = service.metrics.stage_duration
    futures: list[asyncio.Future] = []
    try:
        for chunk in _chunks(starts, batcher.chunk):
            began = time.perf_counter()
            views = await asyncio.to_thread(_features, samples, chunk, cfg)
            spent = time.perf_counter() - began
            timing.features += spent
            stage.labels(stage="features").observe(spent)
            reserved = model.name in reservations
            reservations.discard(model.name)
            futures.append(await batcher.submit(views, reserved=reserved))
        results = [await future for future in futures]
    finally:
        for future in futures:
            future.cancel()
    for result in results:
        timing.queue += result.queue_seconds
        timing.inference += result.inference_seconds
    logits = {
        head.name: np.concatenate([r.logits[head.name] for r in results])
        for head in model.manifest.heads
    }
    return starts, logits


async def _decode(
    service: ModelService, data: bytes, rates: Sequence[int], max_duration: float, timing: _Timing
) -> tuple[DecodedAudio, dict[int, np.ndarray]]:
    """The decoded clip and its resampled copy per model rate."""
    stage = service.metrics.stage_duration
    start = time.perf_counter()
    audio = await asyncio.to_thread(decode_audio, data, max_duration)
    timing.decode = time.perf_counter() - start
    stage.labels(stage="decode").observe(timing.decode)
    service.metrics.audio_duration.observe(audio.duration)
    at_rate: dict[int, np.ndarray] = {}
    for rate in rates:
        start = time.perf_counter()
        at_rate[rate] = await asyncio.to_thread(resample, audio.samples, audio.sample_rate, rate)
        spent = time.perf_counter() - start
        timing.resample += spent
        stage.labels(stage="resample").observe(spent)
    return audio, at_rate


def _predict_head(
    model: LoadedModel,
    head: HeadSpec,
    starts: list[int],
    logits: np.ndarray,
    num_samples: int,
    top_k: int,
    windows: bool,
) -> HeadPrediction:
    probs = _probabilities(logits, head)
    k = min(top_k, len(head.labels))
    prediction = HeadPrediction(
        head=head.name,
        model=model.name,
        model_sha256=model.manifest.sha256,
        top_k=_top(probs.mean(axis=0), head, k),
    )
    if windows:
        cfg = model.manifest.frontend
        span = min(cfg.clip_samples, num_samples)
        prediction.windows = [
            WindowPrediction(
                start=round(s / cfg.sample_rate, 6),
                end=round(min(s + span, num_samples) / cfg.sample_rate, 6),
                top_k=_top(p, head, k),
            )
            for s, p in zip(starts, probs, strict=True)
        ]
    return prediction


async def classify(
    service: ModelService,
    data: bytes,
    *,
    heads: Sequence[str] | None,
    top_k: int,
    windows: bool,
    max_duration: float,
) -> Outcome:
    """Run the whole pipeline on an upload; raises :class:`ApiError` for anything refused.

    Admission comes first: the request reserves a window with every model it needs before any
    decoding, so under overload it is refused in microseconds and costs nothing.
    """
    began = time.perf_counter()
    service.ensure_serving()
    names = resolve_heads(service, heads)
    selected = [service.registry.heads[name] for name in names]
    models = list({model.name: model for model, _ in selected}.values())
    reservations: set[str] = set()
    timing = _Timing()
    try:
        for model in models:
            service.batchers[model.name].reserve()
            reservations.add(model.name)
        rates = list(dict.fromkeys(m.manifest.frontend.sample_rate for m in models))
        audio, at_rate = await _decode(service, data, rates, max_duration, timing)
        tasks = [
            asyncio.create_task(
                _run_model(
                    service, m, at_rate[m.manifest.frontend.sample_rate], timing, reservations
                )
            )
            for m in models
        ]
        try:
            outputs = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
    finally:
        for name in reservations:  # the request failed before using them
            service.batchers[name].cancel_reservation()
    by_model = dict(zip((m.name for m in models), outputs, strict=True))

    predictions = []
    for model, head in selected:
        starts, logits = by_model[model.name]
        num_samples = len(at_rate[model.manifest.frontend.sample_rate])
        predictions.append(
            _predict_head(model, head, starts, logits[head.name], num_samples, top_k, windows)
        )
    elapsed = time.perf_counter() - began
    for name in names:
        service.metrics.head_duration.labels(head=name).observe(elapsed)
    response = ClassifyResponse(
        duration=round(audio.duration, 6),
        sample_rate=audio.sample_rate,
        channels=audio.channels,
        predictions=predictions,
        timing_ms=timing.as_ms(elapsed),
    )
    return Outcome(response, audio)
