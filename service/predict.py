"""The prediction pipeline shared by the HTTP API and the demo: bytes in, scored labels out.

:func:`arinext.service.prepare.prepare` (decode -> downmix -> streaming resample to each model's
rate -> windows -> log-mel, one worker call) -> batched ONNX inference (:class:`Batcher`) ->
per-window probabilities -> clip-level average and top-k.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

from arinext.model.manifest import HeadSpec
from arinext.model.scores import probabilities
from arinext.service.batching import Admission, Batcher, BatchResult
from arinext.service.decoding import DecodedAudio
from arinext.service.detection import KeywordEvent, detect, operating_point
from arinext.service.errors import ApiError
from arinext.service.inference import ModelService
from arinext.service.loading import LoadedModel, ModelRegistry
from arinext.service.prepare import ModelInput, PreparedClip, prepare, window_starts

__all__ = [
    "ClassifyResponse",
    "HeadPrediction",
    "Outcome",
    "ScoredLabel",
    "WindowPrediction",
    "classify",
    "predict_head",
    "resolve_heads",
    "top_labels",
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
    """A head's detections, its clip-level top-k (window probabilities averaged over the whole
    clip) and optional timeline."""

    head: str
    model: str
    model_sha256: str
    detections: list[KeywordEvent] = Field(
        default_factory=list,
        description="what was heard and when: one event per utterance of a keyword, as the "
        "live stream reports them (empty when no window's top keyword reaches the threshold)",
    )
    top_k: list[ScoredLabel] = Field(description="the average over every window of the clip")
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
    """Seconds per stage of one request, on its own timeline, so the stages add up to at most
    ``total``: ``decode`` (container and codec), ``resample`` and ``features`` are worker time
    spent on this request; ``inference`` is its share of the batches that ran its windows (a
    batch's run time split by windows); ``queue`` is the rest of the wait for a worker thread and
    for batches. Stages of several models or chunks that overlap in time are clipped so the
    parts never add up to more than the whole.
    """

    decode: float = 0.0
    resample: float = 0.0
    features: float = 0.0
    queue: float = 0.0
    inference: float = 0.0

    def as_ms(self, total: float) -> dict[str, float]:
        values = {**self.__dict__, "total": total}
        return {name: round(seconds * 1000, 3) for name, seconds in values.items()}


def resolve_heads(registry: ModelRegistry, heads: Sequence[str] | None) -> list[str]:
    """The requested head names in order (all when none are given); 404 for unknown ones."""
    known = registry.heads
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


def top_labels(probs: np.ndarray, head: HeadSpec, k: int) -> list[ScoredLabel]:
    """The ``k`` best labels of one score vector, ties in label order (also used by streams)."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [ScoredLabel(label=head.labels[i], index=int(i), score=float(probs[i])) for i in order]


@dataclass
class _ModelRun:
    """One model's windows through its batcher: logits and the time spent, per stage."""

    logits: dict[str, np.ndarray]
    features: float = 0.0
    queue: float = 0.0
    inference: float = 0.0


async def _run_model(
    service: ModelService, model: LoadedModel, clip: ModelInput, admission: Admission
) -> _ModelRun:
    """Per-window logits of every head of ``model``.

    An ordinary clip (all its windows prepared in one go) is one urgent submission that uses the
    request's reservation. A long clip gives the reservation back and runs as bulk chunks, each
    computed only when the previous one is done, so a request never holds all its log-mels and
    long clips take their turn without crowding short requests out of the queue.
    """
    run = _ModelRun({})
    results = []
    total = len(clip.starts)
    if total == len(clip.views):
        results.append(await admission.run(clip.views))
    else:
        admission.release()
        bulk = admission.batcher.bulk_chunk
        for begin in range(0, total, bulk):
            end = min(begin + bulk, total)
            if end <= len(clip.views):
                views = clip.views[begin:end]
            else:
                started = time.perf_counter()
                views = await service.prepare_on_workers(clip.views_for, begin, end)
                spent = time.perf_counter() - started
                run.features += spent
                service.metrics.stages["features"].observe(spent)
            results.append(await admission.run(views))
    for result in results:
        run.queue += result.queue_seconds
        run.inference += result.inference_seconds
    run.logits = {
        head.name: np.concatenate([r.logits[head.name] for r in results])
        for head in model.manifest.heads
    }
    return run


def predict_head(
    model: LoadedModel,
    head: HeadSpec,
    starts: list[int],
    logits: np.ndarray,
    num_samples: int,
    top_k: int,
    windows: bool,
    *,
    threshold: float | None = None,
    debounce: float | None = None,
    votes: int | None = None,
) -> HeadPrediction:
    """One head's answer from its windows' logits: detections
    (:func:`arinext.service.detection.detect`, ``threshold`` and ``votes`` defaulting to the
    model's operating point and ``debounce`` to the window length, as for streams), clip scores
    (the windows' mean probabilities) and, with ``windows``, each window's top-k (also used by
    the Python API)."""
    probs = probabilities(logits, head.activation)
    k = min(top_k, len(head.labels))
    cfg = model.manifest.frontend
    rate = cfg.sample_rate
    span = min(cfg.clip_samples, num_samples)
    spans = [(round(s / rate, 6), round(min(s + span, num_samples) / rate, 6)) for s in starts]
    threshold, votes = operating_point(model.manifest, threshold, votes)
    found = detect(
        head.name,
        head.labels,
        probs,
        spans,
        hop=(starts[1] - starts[0]) / rate if len(starts) > 1 else cfg.clip_seconds,
        threshold=threshold,
        debounce=cfg.clip_seconds if debounce is None else debounce,
        votes=votes,
    )
    prediction = HeadPrediction(
        head=head.name,
        model=model.name,
        model_sha256=model.manifest.sha256,
        detections=[d.event() for d in found],
        top_k=top_labels(probs.mean(axis=0), head, k),
    )
    if windows:
        prediction.windows = [
            WindowPrediction(start=start, end=end, top_k=top_labels(p, head, k))
            for (start, end), p in zip(spans, probs, strict=True)
        ]
    return prediction


def _prepare_and_run(
    work: Callable[[], PreparedClip], batcher: Batcher
) -> tuple[PreparedClip, BatchResult | None]:
    """In a worker thread: prepare the clip, then run its windows at once if the model is idle
    and they all fit one submission (:meth:`Batcher.run_if_idle`)."""
    clip = work()
    first = clip.inputs[0]
    if len(first.views) != len(first.starts):  # a long clip: it runs as bulk chunks
        return clip, None
    return clip, batcher.run_if_idle(first.views)


async def classify(
    service: ModelService,
    data: bytes,
    *,
    heads: Sequence[str] | None,
    top_k: int,
    windows: bool,
    max_duration: float,
    hop: float | None = None,
    max_windows: int | None = None,
    received: float | None = None,
    threshold: float | None = None,
    debounce: float | None = None,
    votes: int | None = None,
) -> Outcome:
    """Run the whole pipeline on an upload; raises :class:`ApiError` for anything refused.

    Admission comes first: the request reserves a window with every model it needs before any
    decoding, so under overload it is refused in microseconds and costs nothing. Then one worker
    call decodes, resamples and computes the first batch of log-mels (:func:`prepare`).
    ``received`` (``time.perf_counter()`` when the server parsed the request's headers) starts
    the queue-time deadline (:meth:`Batcher.admit`); without it, the reservation does.
    """
    began = time.perf_counter()
    service.ensure_serving()
    names = resolve_heads(service.registry, heads)
    selected = [service.registry.heads[name] for name in names]
    models = list({model.name: model for model, _ in selected}.values())
    batchers = [service.batcher_for(model) for model in models]
    admissions: list[Admission] = []
    try:
        for batcher in batchers:
            admissions.append(batcher.admit(received))
        work = functools.partial(
            prepare,
            data,
            [model.manifest.frontend for model in models],
            max_seconds=max_duration,
            hop_seconds=hop,
            max_windows=max_windows,
            feature_windows=min(b.chunk for b in batchers),
        )
        if len(batchers) == 1:
            clip, inline = await service.prepare_on_workers(_prepare_and_run, work, batchers[0])
        else:
            clip, inline = await service.prepare_on_workers(work), None
        prepared = time.perf_counter()
        for batcher, model_input in zip(batchers, clip.inputs, strict=True):
            if len(model_input.views) == len(model_input.starts):  # long clips run as bulk
                batcher.observe_prepare(clip.cpu_seconds, len(model_input.views))
        if inline is not None:
            admissions[0].ran_inline(inline)
            runs = [_ModelRun(inline.logits, inference=inline.inference_seconds)]
        else:
            # Awaited, not wrapped in tasks, when there is one model: its windows then reach the
            # batcher in the same step of the loop as the preparation's result, so a batch
            # taken right after can include them.
            runs = (
                [await _run_model(service, models[0], clip.inputs[0], admissions[0])]
                if len(models) == 1
                else await asyncio.gather(
                    *(
                        _run_model(service, model, model_input, admission)
                        for model, model_input, admission in zip(
                            models, clip.inputs, admissions, strict=True
                        )
                    )
                )
            )
    finally:
        for admission in admissions:  # and reservations the request did not get to use
            admission.finish()
    finished = time.perf_counter()
    stage = service.metrics.stages
    for name in ("decode", "resample", "features"):
        stage[name].observe(clip.seconds[name])
    service.metrics.audio_duration.observe(clip.duration)

    phase = finished - prepared  # waiting for batches, and computing later chunks' features
    later_features = min(sum(r.features for r in runs), phase)
    batched = 0.0 if inline is not None else sum(r.inference for r in runs)
    batched = min(batched, phase - later_features)
    worker = prepared - began - sum(clip.seconds.values())
    # A run_if_idle run happened inside the worker call, before ``prepared``.
    in_worker = 0.0 if inline is None else min(inline.inference_seconds, max(0.0, worker))
    timing = _Timing(
        decode=clip.seconds["decode"],
        resample=clip.seconds["resample"],
        features=clip.seconds["features"] + later_features,
        queue=max(0.0, worker - in_worker) + phase - later_features - batched,
        inference=batched + in_worker,
    )

    by_model = {
        model.name: (run, model_input)
        for model, run, model_input in zip(models, runs, clip.inputs, strict=True)
    }
    predictions = []
    for model, head in selected:
        run, model_input = by_model[model.name]
        predictions.append(
            predict_head(
                model,
                head,
                model_input.starts,
                run.logits[head.name],
                len(model_input.samples),
                top_k,
                windows,
                threshold=threshold,
                debounce=debounce,
                votes=votes,
            )
        )
    elapsed = time.perf_counter() - began
    for name in names:
        service.metrics.child(service.metrics.head_duration, name).observe(elapsed)
    response = ClassifyResponse(
        duration=round(clip.duration, 6),
        sample_rate=clip.sample_rate,
        channels=clip.channels,
        predictions=predictions,
        timing_ms=timing.as_ms(elapsed),
    )
    first = clip.inputs[0]
    audio = DecodedAudio(first.samples, first.cfg.sample_rate, clip.channels, clip.container)
    return Outcome(response, audio)
