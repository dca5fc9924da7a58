"""Log-mel front-end in numpy, shared by training and serving.

Reproduces the authors' librosa pipeline (STFT with a short Hann window centred in a 2048-point
frame, magnitude, HTK mel filterbank without area normalisation, ``log(mel + 1e-6)``) and their
clip selection, without librosa or torch so the serving image stays slim.

Speed: only ``win_length`` of the 2048 samples of each frame are non-zero, and a shift in time
changes only the phase of the FFT, so the magnitude is the FFT of the bare windowed segment
zero-padded to ``n_fft``. That skips the framing of mostly-zero buffers.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import as_strided
from scipy import fft as sp_fft
from scipy import sparse

from arinext.model.audio_config import AudioConfig

__all__ = [
    "IncrementalViews",
    "clip_view",
    "fit_frames",
    "log_mel",
    "log_mel_views",
    "mel_filterbank",
    "view_starts",
    "window_start",
]


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=16)
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """Triangular HTK-mel filters, peak 1 (no area normalisation), shape (n_mels, n_fft//2+1)."""
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    mel_points = np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2)
    hz_points = _mel_to_hz(mel_points)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=16)
def _hann(win_length: int) -> np.ndarray:
    """Periodic Hann window, as scipy.signal.get_window('hann', n) and librosa use."""
    n = np.arange(win_length, dtype=np.float64)
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)).astype(np.float32)
    window.setflags(write=False)
    return window


def log_mel(samples: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Log-mel spectrogram of a mono float waveform, shape (frames, n_mels), float32.

    ``frames = 1 + len(samples) // hop`` (librosa's ``center=True`` with zero padding).
    """
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"expected a mono waveform, got shape {samples.shape}")
    n_fft, hop, win = cfg.n_fft, cfg.hop_length, cfg.win_length
    if win > n_fft:
        raise ValueError(f"window ({win} samples) longer than n_fft ({n_fft})")
    frames = 1 + len(samples) // hop
    half = n_fft // 2
    # Zero-pad as center=True does; then each frame's non-zero part starts at t*hop + offset.
    offset = (n_fft - win) // 2
    needed = (frames - 1) * hop + n_fft
    padded = np.zeros(needed, dtype=np.float32)
    take = min(len(samples), needed - half)
    padded[half : half + take] = samples[:take]
    segments = as_strided(
        padded[offset:],
        shape=(frames, win),
        strides=(hop * padded.strides[0], padded.strides[0]),
        writeable=False,
    )
    return _log_mel_frames(segments, cfg)


def _log_mel_frames(segments: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Log-mel rows of windowed segments ``(frames, win_length)``: one code path for whole
    clips and for a stream's new frames, so both give the same numbers."""
    spectrum = sp_fft.rfft(segments * _hann(cfg.win_length), n=cfg.n_fft, axis=1)
    magnitude = np.abs(spectrum)
    fb = _sparse_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.mel_fmax)
    mel = (fb @ magnitude.T).T
    return np.ascontiguousarray(np.log(mel + np.float32(cfg.log_offset), dtype=np.float32))


@lru_cache(maxsize=16)
def _sparse_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> sparse.csr_array:
    """:func:`mel_filterbank` as a sparse matrix: each FFT bin lies under at most two of the
    triangles, so the product skips the zeros (about 2,000 of 131,000 weights at 128 bands and
    2048 points) and costs a fifth of the dense one for a stream's new frames."""
    return sparse.csr_array(mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax))


def fit_frames(spec: np.ndarray, num_frames: int) -> np.ndarray:
    """Pad a short spectrogram by repeating its last frame (as the reference does), or crop."""
    if spec.shape[0] >= num_frames:
        return spec[:num_frames]
    pad = np.repeat(spec[-1:], num_frames - spec.shape[0], axis=0)
    return np.concatenate([spec, pad], axis=0)


def view_starts(num_samples: int, cfg: AudioConfig, views: int | None = None) -> list[int]:
    """Start samples of ``views`` evenly spaced test views (one view when the clip is short)."""
    views = cfg.test_views if views is None else views
    clip = cfg.clip_samples
    if num_samples <= clip:
        return [0]
    return [round(float(s)) for s in np.linspace(0, num_samples - clip, views)]


def clip_view(samples: np.ndarray, start: int, cfg: AudioConfig) -> np.ndarray:
    """Log-mel of the view starting at ``start``, exactly ``num_frames`` frames.

    A long clip is cut to ``clip_samples - 1`` samples (the reference's slice, which is what
    makes the frame counts come out at exactly 512 / 416); a short one is used whole and padded.
    """
    clip = cfg.clip_samples
    if len(samples) < clip:
        spec = log_mel(samples, cfg)
    else:
        spec = log_mel(samples[start : start + clip - 1], cfg)
    return fit_frames(spec, cfg.num_frames)


def window_start(index: int, hop: int, cfg: AudioConfig) -> int:
    """Start sample of window ``index`` of a scan with a window every ``hop`` samples.

    Starts fall on the front-end's frame grid (``index * hop`` rounded to the nearest whole
    frame hop), so overlapping windows share every frame they cover and a stream computes only
    the frames a hop adds (:class:`IncrementalViews`): at a hop of 12.5 frames (0.25 s at a
    20 ms frame hop) windows alternate steps of 13 and 12 frames, half the frames of windows
    cut at exact multiples of the hop, and still 4 a second. A hop shorter than a frame hop is
    kept exact.
    """
    step = cfg.hop_length
    if hop < step:
        return index * hop
    return (index * hop + step // 2) // step * step


class IncrementalViews:
    """Views of one stream's windows that reuse the log-mel frames earlier windows computed.

    A frame of a view is a function of the samples under it alone, except the first and last
    few, which reach into the view's zero padding. Frames of the first kind are kept by where
    they lie in the stream and computed once, whatever the hop (windows whose starts are not a
    whole number of frame hops apart simply share fewer of them); the others are computed per
    view. :meth:`view` equals :func:`clip_view` of the window.
    """

    def __init__(self, cfg: AudioConfig) -> None:
        self.cfg = cfg
        self._frames: dict[int, np.ndarray] = {}  # stream position of a frame's segment -> row
        self.computed = 0  # frames computed so far
        self.reused = 0  # frames taken from earlier windows
        # Where a whole view's frames lie, the same for every view: each frame's segment start
        # in the padded view, and which frames lie on real samples only (shareable).
        hop, win, half = cfg.hop_length, cfg.win_length, cfg.n_fft // 2
        samples = cfg.clip_samples - 1  # as clip_view cuts a long clip
        self._count = min(1 + samples // hop, cfg.num_frames)
        begins = np.arange(self._count) * hop + (cfg.n_fft - win) // 2
        take = min(samples, (self._count - 1) * hop + cfg.n_fft - half)
        shared = (half <= begins) & (begins + win <= half + take)
        self._begins = begins
        self._shared_list = np.flatnonzero(shared).tolist()
        self._edges = np.flatnonzero(~shared)
        self._offsets = (begins[shared] - half).tolist()  # in the stream, from the view's start
        self._take = take

    def view(self, window: np.ndarray, start: int) -> np.ndarray:
        """The view of ``window`` (the stream's samples from position ``start``), shape
        ``(num_frames, n_mels)``."""
        cfg = self.cfg
        if len(window) < cfg.clip_samples:  # a stream shorter than one view: a padded clip
            return clip_view(window, 0, cfg)
        # As log_mel pads: frame t's segment is padded[self._begins[t] :][:win_length], and the
        # window's first `take` samples sit at padded[half : half + take].
        half, take = cfg.n_fft // 2, self._take
        padded = np.zeros((self._count - 1) * cfg.hop_length + cfg.n_fft, dtype=np.float32)
        padded[half : half + take] = window[:take]
        out = np.empty((self._count, cfg.n_mels), dtype=np.float32)
        missing = []
        for t, offset in zip(self._shared_list, self._offsets, strict=True):
            row = self._frames.get(start + offset)
            if row is None:
                missing.append(t)
            else:
                out[t] = row
        self.reused += len(self._offsets) - len(missing)
        todo = np.concatenate([self._edges, np.asarray(missing, dtype=np.int64)])
        at = self._begins[todo]
        fresh = _log_mel_frames(padded[at[:, None] + np.arange(cfg.win_length)], cfg)
        out[todo] = fresh
        # The cache keeps rows of `fresh`, not of `out`: a caller writing into the view it gets
        # back cannot change what later windows reuse.
        for t, row in zip(missing, fresh[len(self._edges) :], strict=True):
            self._frames[start + int(self._begins[t]) - half] = row
        self.computed += len(todo)
        for position in [p for p in self._frames if p < start]:  # behind every later window
            del self._frames[position]
        return fit_frames(out, cfg.num_frames)


def log_mel_views(samples: np.ndarray, cfg: AudioConfig, views: int | None = None) -> np.ndarray:
    """Evenly spaced test views as a network batch, shape (views, 1, num_frames, n_mels)."""
    starts = view_starts(len(samples), cfg, views)
    return np.stack([clip_view(samples, s, cfg) for s in starts])[:, None]
