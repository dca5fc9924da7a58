"""SpecAugment (Park et al., 2019) as the reference applies it to training log-mels.

Order and sizes follow the authors: a time warp of at most W=5 frames, then 2 frequency masks of
up to F=27 bins, then 2 time masks of up to T=25 frames; masked cells take the spectrogram's mean
(not zero: a log-mel's zero is a loud value). Numpy, per clip, inside DataLoader workers, with an
explicit ``Generator`` so that a run is reproducible whatever the number of workers.
"""

from __future__ import annotations

import numpy as np

from arinext.training.config import AugmentConfig

__all__ = ["frequency_mask", "spec_augment", "time_mask", "time_warp"]


def time_warp(spec: np.ndarray, max_warp: int, rng: np.random.Generator) -> np.ndarray:
    """Move a random frame ``c`` by up to ``max_warp`` frames, stretching both sides linearly.

    ``spec`` is (frames, mels). The two ends stay fixed; frames are linearly interpolated.
    """
    frames = spec.shape[0]
    if max_warp <= 0 or frames <= 2 * max_warp + 2:
        return spec
    centre = int(rng.integers(max_warp + 1, frames - max_warp - 1))
    target = centre + int(rng.integers(-max_warp, max_warp + 1))
    dest = np.arange(frames, dtype=np.float64)
    # Source position of every output frame: [0, target] <- [0, centre], rest <- [centre, end].
    last = frames - 1
    source = np.where(
        dest <= target,
        dest * centre / target,
        centre + (dest - target) * (last - centre) / (last - target),
    )
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, last)
    frac = (source - low).astype(spec.dtype)[:, None]
    return spec[low] * (1 - frac) + spec[high] * frac


def frequency_mask(
    spec: np.ndarray, max_width: int, value: float, rng: np.random.Generator
) -> None:
    """Set a random band of up to ``max_width`` mel bins to ``value`` (in place)."""
    _mask_axis(spec, 1, max_width, value, rng)


def time_mask(spec: np.ndarray, max_width: int, value: float, rng: np.random.Generator) -> None:
    """Set a random run of up to ``max_width`` frames to ``value`` (in place)."""
    _mask_axis(spec, 0, max_width, value, rng)


def _mask_axis(
    spec: np.ndarray, axis: int, max_width: int, value: float, rng: np.random.Generator
) -> None:
    size = spec.shape[axis]
    width = int(rng.integers(0, min(max_width, size) + 1))
    start = int(rng.integers(0, size - width + 1))
    index = [slice(None), slice(None)]
    index[axis] = slice(start, start + width)
    spec[tuple(index)] = value


def spec_augment(spec: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Warped and masked copy of a (frames, mels) log-mel; the input is left untouched."""
    out = time_warp(spec, cfg.time_warp, rng).copy()
    mean = float(out.mean())
    for _ in range(cfg.freq_masks):
        frequency_mask(out, cfg.freq_width, mean, rng)
    for _ in range(cfg.time_masks):
        time_mask(out, cfg.time_width, mean, rng)
    return out
