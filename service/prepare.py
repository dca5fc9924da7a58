"""The per-request CPU work in one synchronous call: bytes -> windows of log-mels per model.

decode -> downmix -> resample to each model's rate (one stream, bounded memory) -> window starts
(evenly spaced, or every ``hop_seconds``) -> log-mel views (``arinext.model.frontend``, the code
training used). The HTTP server runs :func:`prepare` in one worker-thread hop per request; the
in-process pipeline (``arinext predict``) calls it directly, so both serve the same numbers.

Windows: a clip no longer than a model's view is one window (the front-end pads it). A longer clip
is scanned as a stream is: views start every ``hop_seconds`` (default
:data:`~arinext.service.detection.DEFAULT_HOP_SECONDS`), plus one that ends at the end of the clip
when the hops do not reach it, so every word is whole in some window and the detector
(:mod:`arinext.service.detection`) reports it as the live stream would.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from arinext.model.audio_config import AudioConfig
from arinext.model.frontend import IncrementalViews, window_start
from arinext.service.decoding import decode_resampled
from arinext.service.detection import DEFAULT_HOP_SECONDS
from arinext.service.errors import ApiError

__all__ = [
    "ModelInput",
    "PreparedClip",
    "features",
    "model_inputs",
    "prepare",
    "window_starts",
]


def window_starts(
    num_samples: int, cfg: AudioConfig, hop_seconds: float | None = None
) -> list[int]:
    """Start samples of the windows covering a clip of ``num_samples`` at the model's rate
    (every ``hop_seconds`` on the front-end's frame grid, :func:`window_start`, as a stream's)."""
    clip = cfg.clip_samples
    if num_samples <= clip:
        return [0]
    if hop_seconds is None:
        hop_seconds = DEFAULT_HOP_SECONDS
    hop = max(1, round(hop_seconds * cfg.sample_rate))
    starts: list[int] = []
    while (start := window_start(len(starts), hop, cfg)) + clip <= num_samples:
        starts.append(start)
    if starts[-1] + clip < num_samples:
        starts.append(num_samples - clip)
    return starts


def features(samples: np.ndarray, starts: Sequence[int], cfg: AudioConfig) -> np.ndarray:
    """Log-mel views ``(len(starts), 1, num_frames, n_mels)``; 400 when samples overflow them.

    Overlapping windows of a long clip share their frames as a stream's do
    (:class:`~arinext.model.frontend.IncrementalViews`: each frame computed once, the same
    numbers as each window computed whole).
    """
    with np.errstate(over="ignore", invalid="ignore"):  # absurd amplitudes are refused below
        shared = IncrementalViews(cfg)  # a clip shorter than a view: padded, as clip_view does
        views = np.stack(
            [shared.view(samples[start : start + cfg.clip_samples], start) for start in starts]
        )[:, None]
    if not np.isfinite(views).all():
        raise ApiError(400, "invalid_audio", "sample values are out of range (features overflow)")
    return views


@dataclass(frozen=True)
class ModelInput:
    """One model's share of a clip: its samples, window starts, and the first windows' views.

    ``views`` holds the log-mels of ``starts[:len(views)]``; the rest (long clips) are computed
    later with :meth:`views_for`, a chunk at a time, so a request never holds all its log-mels.
    """

    cfg: AudioConfig
    samples: np.ndarray
    starts: list[int]
    views: np.ndarray

    def views_for(self, begin: int, end: int) -> np.ndarray:
        """The views of windows ``begin:end``."""
        return features(self.samples, self.starts[begin:end], self.cfg)


@dataclass(frozen=True)
class PreparedClip:
    """What one upload became: per-model inputs (in the order asked) and the file's facts.

    ``seconds`` times the stages of this call: ``decode`` (container and codec, excluding the
    resampler), ``resample`` and ``features``; ``cpu_seconds`` is the CPU time the whole call
    took, which is what it costs a busy server (the wall time also counts waiting for the CPU).
    """

    inputs: list[ModelInput]
    sample_rate: int
    channels: int
    container: str
    duration: float
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: float = 0.0


def model_inputs(
    at_rate: Mapping[int, np.ndarray],
    configs: Sequence[AudioConfig],
    *,
    hop_seconds: float | None = None,
    max_windows: int | None = None,
    feature_windows: int | None = None,
) -> list[ModelInput]:
    """Windows and first log-mels per config from mono samples at each config's rate (what
    :func:`prepare` does after decoding; callers that already hold a waveform start here)."""
    inputs = []
    for cfg in configs:
        samples = at_rate[cfg.sample_rate]
        starts = window_starts(len(samples), cfg, hop_seconds)
        if max_windows is not None and len(starts) > max_windows:
            raise ApiError(
                413,
                "too_many_windows",
                f"the clip needs {len(starts)} windows, over the limit of {max_windows} per "
                "request; send a shorter clip or a larger hop",
                reason="too_long",
            )
        first = len(starts) if feature_windows is None else min(feature_windows, len(starts))
        inputs.append(ModelInput(cfg, samples, starts, features(samples, starts[:first], cfg)))
    return inputs


def prepare(
    data: bytes,
    configs: Sequence[AudioConfig],
    *,
    max_seconds: float,
    hop_seconds: float | None = None,
    max_windows: int | None = None,
    feature_windows: int | None = None,
) -> PreparedClip:
    """Decode ``data`` once and prepare the windows of every model config in ``configs``.

    ``max_seconds`` bounds the decoded duration (413 beyond it); ``hop_seconds`` sets the window
    step (default: evenly spaced views, see the module docstring); ``max_windows`` refuses a
    request that would need more windows for one model (413); ``feature_windows`` computes the
    views of only the first that many windows per model (default: all of them).
    Raises :class:`~arinext.service.errors.ApiError` for anything refused (400, 413, 415).
    """
    began, cpu = time.perf_counter(), time.thread_time()
    rates = list(dict.fromkeys(cfg.sample_rate for cfg in configs))
    audio = decode_resampled(data, rates, max_seconds)
    decoded = time.perf_counter()
    inputs = model_inputs(
        audio.at_rate,
        configs,
        hop_seconds=hop_seconds,
        max_windows=max_windows,
        feature_windows=feature_windows,
    )
    done = time.perf_counter()
    seconds = {
        "decode": decoded - began - audio.resample_seconds,
        "resample": audio.resample_seconds,
        "features": done - decoded,
    }
    return PreparedClip(
        inputs,
        audio.sample_rate,
        audio.channels,
        audio.container,
        audio.duration,
        seconds,
        time.thread_time() - cpu,
    )
