"""The synchronous pipeline and Python API: audio in, the same answer as ``POST /classify`` out.

``Classifier`` runs bytes (or a file, or a waveform) -> PCM -> resample -> windows -> log-mel
-> ONNX Runtime -> labels in the calling thread, with the server's decoding, front-end, window
placement and scoring (``arinext.service.prepare``, ``arinext.service.predict``), so a clip
scores the same in a script, in ``arinext predict`` and over HTTP. No torch, no event loop::

    from arinext.service.pipeline import Classifier

    classifier = Classifier.from_artifacts()  # the embedded default model
    result = classifier("clip.wav", top_k=3)
    print(result.predictions[0].top_k[0].label)

The work is split in two so that callers with many files can spread the first half over
processes: :func:`prepare_clip` (decode, resample, log-mel: :func:`arinext.service.prepare.prepare`,
the call the server makes; plain data in and out, so it pickles) and :meth:`Classifier.score`
(batched inference over any number of prepared clips).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from arinext.model.audio_config import AudioConfig
from arinext.service.decoding import MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, resample
from arinext.service.detection import DetectionParameters
from arinext.service.errors import ApiError
from arinext.service.loading import LoadedModel, ModelRegistry, load_models
from arinext.service.predict import ClassifyResponse, HeadPrediction, predict_head, resolve_heads
from arinext.service.prepare import ModelInput, PreparedClip, model_inputs, prepare
from arinext.service.settings import EMBEDDED_MODEL_DIR, MAX_TOP_K, Settings

__all__ = ["AudioInput", "Classifier", "prepare_clip", "prepare_waveform"]

AudioInput = str | os.PathLike | bytes | np.ndarray
# The server's defaults: a local clip is refused where an upload would be.
DEFAULT_MAX_DURATION_SECONDS = Settings.model_fields["max_duration_seconds"].default
DEFAULT_MAX_WINDOWS = Settings.model_fields["max_windows"].default


def _mono(samples: np.ndarray, sample_rate: int, max_duration: float) -> tuple[np.ndarray, int]:
    """A waveform given as numbers, checked like a decoded file: (samples,) or (samples, ch)."""
    array = np.asarray(samples)
    if array.dtype.kind not in "fiu":
        raise ApiError(400, "invalid_audio", f"waveform must be numeric, got {array.dtype}")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or not 1 <= array.shape[1] <= MAX_CHANNELS:
        raise ApiError(
            400,
            "invalid_audio",
            f"waveform must be (samples,) or (samples, channels <= {MAX_CHANNELS}), "
            f"got shape {np.shape(samples)}",
        )
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ApiError(
            400,
            "invalid_audio",
            f"sample rate {sample_rate} Hz outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz",
        )
    if len(array) == 0:
        raise ApiError(400, "empty_audio", "the waveform has no samples")
    if len(array) > max_duration * sample_rate:
        raise ApiError(
            413,
            "audio_too_long",
            f"decoded audio is longer than the limit of {max_duration:g} s",
            reason="too_long",
        )
    mono = array.astype(np.float32).mean(axis=1, dtype=np.float32)
    if not np.isfinite(mono).all():
        raise ApiError(400, "invalid_audio", "audio contains NaN or infinite samples")
    return mono, array.shape[1]


def prepare_waveform(
    samples: np.ndarray,
    sample_rate: int,
    configs: Sequence[AudioConfig],
    *,
    hop: float | None = None,
    max_duration: float = DEFAULT_MAX_DURATION_SECONDS,
    max_windows: int | None = DEFAULT_MAX_WINDOWS,
) -> PreparedClip:
    """:func:`arinext.service.prepare.prepare` for PCM given as numbers, not an encoded file."""
    began = time.perf_counter()
    mono, channels = _mono(samples, sample_rate, max_duration)
    at_rate = {rate: resample(mono, sample_rate, rate) for rate in {c.sample_rate for c in configs}}
    resampled = time.perf_counter()
    inputs = model_inputs(at_rate, configs, hop_seconds=hop, max_windows=max_windows)
    seconds = {
        "decode": 0.0,
        "resample": resampled - began,
        "features": time.perf_counter() - resampled,
    }
    return PreparedClip(inputs, sample_rate, channels, "pcm", len(mono) / sample_rate, seconds)


def prepare_clip(
    audio: AudioInput,
    configs: Sequence[AudioConfig],
    *,
    sample_rate: int | None = None,
    hop: float | None = None,
    max_duration: float = DEFAULT_MAX_DURATION_SECONDS,
    max_windows: int | None = DEFAULT_MAX_WINDOWS,
) -> PreparedClip:
    """Decode (a path, bytes) or take (a waveform) a clip and compute every window's log-mel.

    Raises :class:`ApiError` for audio the server would refuse, with the same status and code.
    """
    if hop is not None and not hop > 0:
        raise ApiError(422, "invalid_parameter", f"hop must be positive seconds, got {hop}")
    if isinstance(audio, np.ndarray):
        if sample_rate is None:
            raise ApiError(422, "invalid_parameter", "a waveform needs its sample_rate")
        return prepare_waveform(
            audio,
            sample_rate,
            configs,
            hop=hop,
            max_duration=max_duration,
            max_windows=max_windows,
        )
    if sample_rate is not None:
        raise ApiError(422, "invalid_parameter", "sample_rate is only for waveforms")
    data = audio if isinstance(audio, bytes) else Path(audio).read_bytes()
    return prepare(
        data, configs, max_seconds=max_duration, hop_seconds=hop, max_windows=max_windows
    )


def _input_for(clip: PreparedClip, model: LoadedModel) -> ModelInput:
    cfg = model.manifest.frontend
    return next(i for i in clip.inputs if i.cfg == cfg)


class Classifier:
    """Served artifacts in this process: call it on a file, bytes or a waveform.

    Answers are :class:`~arinext.service.predict.ClassifyResponse` objects, field for field what
    ``POST /classify`` returns for the same clip and parameters (``.model_dump()`` for a dict).
    Windows of several clips passed to :meth:`score` together share ONNX Runtime batches.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        max_batch: int = 16,
        max_duration: float = DEFAULT_MAX_DURATION_SECONDS,
        max_windows: int | None = DEFAULT_MAX_WINDOWS,
    ) -> None:
        if not registry.models:
            raise ValueError("a Classifier needs at least one model")
        self.registry = registry
        self.max_batch = max_batch
        self.max_duration = max_duration
        self.max_windows = max_windows

    @classmethod
    def from_artifacts(
        cls,
        dirs: Sequence[str | os.PathLike] | str | os.PathLike | None = None,
        *,
        intra_op_threads: int = 0,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        backend: str = "onnxruntime",
        precision: str = "auto",
        max_batch: int = 16,
        max_duration: float = DEFAULT_MAX_DURATION_SECONDS,
        max_windows: int | None = DEFAULT_MAX_WINDOWS,
    ) -> Classifier:
        """Verify and load artifact directories (default: the embedded model).

        Raises ``arinext.model.manifest.ArtifactError`` when one does not verify, as the server
        does.
        """
        if dirs is None:
            dirs = [EMBEDDED_MODEL_DIR]
        elif isinstance(dirs, str | os.PathLike):
            dirs = [dirs]
        registry = load_models(
            [Path(d) for d in dirs],
            intra_op_threads=intra_op_threads,
            providers=providers,
            backend=backend,
            precision=precision,
        )
        return cls(
            registry, max_batch=max_batch, max_duration=max_duration, max_windows=max_windows
        )

    @property
    def heads(self) -> list[str]:
        """Every head name, in the order answers list them."""
        return list(self.registry.heads)

    @property
    def frontends(self) -> list[AudioConfig]:
        """The front-end settings of the served models (what :func:`prepare_clip` needs)."""
        return list(dict.fromkeys(m.manifest.frontend for m in self.registry.models.values()))

    def __call__(
        self,
        audio: AudioInput,
        *,
        sample_rate: int | None = None,
        heads: Sequence[str] | None = None,
        top_k: int = 5,
        windows: bool = False,
        hop: float | None = None,
        threshold: float | None = None,
        debounce: float | None = None,
        votes: int | None = None,
    ) -> ClassifyResponse:
        """Classify one clip: a path, the encoded bytes, or a waveform with its ``sample_rate``.

        ``hop``: seconds between window starts of a clip longer than one window (default
        :data:`~arinext.service.detection.DEFAULT_HOP_SECONDS`, as the server places them);
        ``threshold``, ``debounce`` and ``votes`` tune the detections (as a stream's; default: each
        model's tuned operating point, else the service's defaults). Refused input
        raises :class:`~arinext.service.errors.ApiError`.
        """
        began = time.perf_counter()
        selected = self._select(heads, top_k)
        clip = prepare_clip(
            audio,
            self._frontends_of(selected),
            sample_rate=sample_rate,
            hop=hop,
            max_duration=self.max_duration,
            max_windows=self.max_windows,
        )
        return self.score(
            [clip],
            heads=heads,
            top_k=top_k,
            windows=windows,
            began=began,
            threshold=threshold,
            debounce=debounce,
            votes=votes,
        )[0]

    def prepare(
        self, audio: AudioInput, *, sample_rate: int | None = None, hop: float | None = None
    ) -> PreparedClip:
        """:func:`prepare_clip` with this classifier's front-ends and duration limit."""
        return prepare_clip(
            audio,
            self.frontends,
            sample_rate=sample_rate,
            hop=hop,
            max_duration=self.max_duration,
            max_windows=self.max_windows,
        )

    def score(
        self,
        clips: Sequence[PreparedClip],
        *,
        heads: Sequence[str] | None = None,
        top_k: int = 5,
        windows: bool = False,
        began: float | None = None,
        threshold: float | None = None,
        debounce: float | None = None,
        votes: int | None = None,
    ) -> list[ClassifyResponse]:
        """Run the windows of ``clips`` through the models in shared batches; one answer each."""
        selected = self._select(heads, top_k)
        _check_detection(threshold, votes, debounce)
        if not clips:
            return []
        models = list({model.name: model for model, _ in selected}.values())
        logits: dict[str, list[dict[str, np.ndarray]]] = {}
        inference = 0.0
        for model in models:
            start = time.perf_counter()
            logits[model.name] = self._run(model, clips)
            inference += time.perf_counter() - start
        answers = []
        for i, clip in enumerate(clips):
            predictions: list[HeadPrediction] = []
            for model, head in selected:
                clip_input = _input_for(clip, model)
                predictions.append(
                    predict_head(
                        model,
                        head,
                        clip_input.starts,
                        logits[model.name][i][head.name],
                        len(clip_input.samples),
                        top_k,
                        windows,
                        threshold=threshold,
                        debounce=debounce,
                        votes=votes,
                    )
                )
            total = time.perf_counter() - began if began is not None else sum(clip.seconds.values())
            timing = {**clip.seconds, "queue": 0.0, "inference": inference / len(clips)}
            answers.append(
                ClassifyResponse(
                    duration=round(clip.duration, 6),
                    sample_rate=clip.sample_rate,
                    channels=clip.channels,
                    predictions=predictions,
                    timing_ms={
                        k: round(v * 1000, 3) for k, v in {**timing, "total": total}.items()
                    },
                )
            )
        return answers

    def _select(self, heads: Sequence[str] | None, top_k: int) -> list:
        if not 1 <= top_k <= MAX_TOP_K:
            raise ApiError(422, "invalid_parameter", f"top_k must be 1..{MAX_TOP_K}, got {top_k}")
        return [self.registry.heads[name] for name in resolve_heads(self.registry, heads)]

    @staticmethod
    def _frontends_of(selected: Sequence) -> list[AudioConfig]:
        return list(dict.fromkeys(model.manifest.frontend for model, _ in selected))

    def _run(
        self, model: LoadedModel, clips: Sequence[PreparedClip]
    ) -> list[dict[str, np.ndarray]]:
        """Per clip, the logits of every head of ``model`` for each of its windows."""
        views = [_input_for(clip, model).views for clip in clips]
        counts = [len(v) for v in views]
        stacked = np.concatenate(views) if len(views) > 1 else views[0]
        batches = math.ceil(len(stacked) / self.max_batch)
        outputs = [
            model.run(stacked[b * self.max_batch : (b + 1) * self.max_batch])
            for b in range(batches)
        ]
        joined = {
            head.name: np.concatenate([o[head.name] for o in outputs])
            for head in model.manifest.heads
        }
        bounds = np.cumsum([0, *counts])
        return [
            {name: values[bounds[i] : bounds[i + 1]] for name, values in joined.items()}
            for i in range(len(clips))
        ]


def _check_detection(threshold: float | None, votes: int | None, debounce: float | None) -> None:
    """The bounds ``/classify`` holds its query to, for the Python API."""
    try:
        DetectionParameters(threshold=threshold, votes=votes, debounce=debounce)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = f"{error['loc'][0]}: {error['msg']}, got {error['input']!r}"
        raise ApiError(422, "invalid_parameter", message) from None
