"""The window of a keyword run, and each clip placed in it and turned into log-mel views.

The phrases' measured durations set the network's input length (``clip_seconds`` in the
manifest's front-end), so phrases longer than one second fit whole; the service derives the
stream's window and its debounce from it. Each clip is placed in the window and augmented several
times (:class:`arinext.training.waveform_augment.WaveformAugmenter`), in parallel processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from arinext.model.labels import SILENCE
from arinext.training.keywords.recipe import ProgressCallback
from arinext.training.synth_speech import SAMPLE_RATE, derive_seed

__all__ = [
    "ViewJob",
    "init_view_worker",
    "map_in_processes",
    "phrase_window",
    "placed_clip",
    "views",
    "window_frontend",
]

_WINDOW_STEP_S = 0.25
# One clip's views: (samples, is speech, augmented copies (0: placed and levelled only), seed).
ViewJob = tuple[np.ndarray, bool, int, int]


def phrase_window(durations: Sequence[float], margin_s: float, minimum_s: float) -> float:
    """Window length in seconds: the 95th-percentile phrase plus a margin, in quarter seconds.

    Shorter than the longest renditions on purpose: the slowest voices would otherwise make
    every window mostly silence; a longer rendition is cut around its middle.
    """
    longest = float(np.percentile(durations, 95)) + margin_s
    return max(minimum_s, float(np.ceil(longest / _WINDOW_STEP_S - 1e-9) * _WINDOW_STEP_S))


def window_frontend(base: Any, window_s: float) -> Any:
    """The backbone's front-end ``base`` with the window stretched to ``window_s``."""
    from arinext.model.audio_config import AudioConfig

    samples = round(base.sample_rate * window_s)
    frames = 1 + (samples - 1) // base.hop_length
    settings = {**base.model_dump(), "clip_seconds": window_s, "num_frames": frames}
    settings["name"] = "keywords"
    return AudioConfig(**settings)


def _place(speech: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """The utterance at a random offset in ``n`` samples (its middle when longer)."""
    clip = np.zeros(n, dtype=np.float32)
    if speech.size > n:
        start = (speech.size - n) // 2
        return speech[start : start + n].astype(np.float32)
    offset = int(rng.integers(0, n - speech.size + 1))
    clip[offset : offset + speech.size] = speech
    return clip


def _level(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Peak at -20 to -1 dBFS."""
    return clip * np.float32(10 ** (rng.uniform(-20, -1) / 20) / (np.abs(clip).max() + 1e-9))


def placed_clip(speech: np.ndarray, label: str, frontend: Any, seed: int) -> np.ndarray:
    """A clip as the artifact hears it, placed in its window (calibration and check clips)."""
    from arinext.training.waveform_augment import non_speech

    rng = np.random.default_rng(derive_seed("place", seed))
    n = frontend.clip_samples
    if label == SILENCE:
        return non_speech(n, SAMPLE_RATE, rng).astype(np.float32)
    return _level(_place(speech, n, rng), rng)


# --- augmentation in worker processes ---------------------------------------------------------

_WORKER: dict[str, Any] = {}


def init_view_worker(seed: int, babble: list[np.ndarray], frontend: Any) -> None:
    """Set up a process for :func:`views`: its augmenter, the babble talkers and the window."""
    from arinext.training.waveform_augment import WaveformAugmenter

    _WORKER.update(
        augmenter=WaveformAugmenter(SAMPLE_RATE, rooms=16, seed=seed),
        babble=babble,
        frontend=frontend,
    )


def views(job: ViewJob) -> np.ndarray:
    """Log-mel views ``(copies, frames, mels)`` of one clip: placed, then augmented (copies > 0)
    or only placed and levelled (copies == 0, the held-out view)."""
    from arinext.model.frontend import clip_view
    from arinext.training.waveform_augment import non_speech

    speech, is_speech, copies, seed = job
    cfg = _WORKER["frontend"]
    n = cfg.clip_samples
    augmenter, babble = _WORKER["augmenter"], _WORKER["babble"]

    def talker(rng: np.random.Generator) -> np.ndarray:
        return babble[int(rng.integers(len(babble)))]

    out = []
    for copy in range(max(copies, 1)):
        rng = np.random.default_rng(derive_seed(seed, copy))
        clip = _place(speech, n, rng) if is_speech else non_speech(n, SAMPLE_RATE, rng)
        if copies:
            clip = augmenter(clip, rng, is_speech=is_speech, babble=talker)
        else:
            clip = _level(clip, rng)
        out.append(clip_view(clip.astype(np.float32), 0, cfg))
    return np.stack(out).astype(np.float32)


def map_in_processes(
    function: Callable[[Any], Any],
    jobs: Sequence[Any],
    workers: int,
    stage: str,
    progress: ProgressCallback,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> list[Any]:
    """``function`` over ``jobs`` in worker processes, in order, reporting progress."""
    out = []
    progress(stage, 0, len(jobs))
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        for i, job in enumerate(jobs):
            out.append(function(job))
            progress(stage, i + 1, len(jobs))
        return out
    with ProcessPoolExecutor(workers, initializer=initializer, initargs=initargs) as pool:
        for i, result in enumerate(pool.map(function, jobs, chunksize=8)):
            out.append(result)
            progress(stage, i + 1, len(jobs))
    return out
