"""Waveform augmentation for keyword training, and the fixed degradations that test it.

A model trained on one synthesiser's clean speech learns that synthesiser. What makes it hear
*speech* is seeing each word under everything a real microphone adds: other voices (speed,
pitch, vocal-tract length), other channels (EQ, telephone band), other rooms (reverberation),
other backgrounds (noise, hum, babble) and other levels. :class:`WaveformAugmenter` draws a fresh
chain per clip inside the DataLoader workers, before the shared log-mel front-end (SpecAugment
then runs on the log-mel as before).

The pieces come from well-kept libraries where one fits: audiomentations (pitch shift, time
stretch, parametric EQ, band-pass, coloured noise), pyroomacoustics (image-source room impulse
responses for a target RT60), soxr (speed and 8 kHz round trips). Vocal-tract-length
perturbation (Jaitly & Hinton, 2013) and a non-uniform tempo change have no library form for
waveforms, so they are short STFT warps here (frequency axis and time axis).

:func:`degrade` applies the out-of-domain test's named conditions (10 dB noise, RT60 0.5 s
room, telephone line, -30 dB speech over a hum-and-hiss floor) deterministically from a seed.

Every random choice comes from an explicit ``numpy.random.Generator`` (audiomentations draws
from the global ``random``/``numpy.random``, which are seeded from it per call), so a run is
reproducible whatever the number of workers. No torch here: the out-of-domain writer runs in the
serving image too.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

__all__ = [
    "CONDITIONS",
    "AugmentSettings",
    "WaveformAugmenter",
    "colored_noise",
    "degrade",
    "hum",
    "mix_at_snr",
    "non_speech",
    "quiet_over_floor",
    "reverberate",
    "room_impulse",
    "telephone",
    "time_warp",
    "vtlp",
]

# Conditions of the out-of-domain test, in report order.
CONDITIONS: tuple[str, ...] = ("clean", "noise_10db", "reverb_0.5s", "telephone", "quiet_-30db")

_F_DECAY = {"white": 0.0, "pink": -3.01, "brown": -6.02}


def _seed_globals(rng: np.random.Generator) -> None:
    """audiomentations draws from the global generators: seed them from ours."""
    seed = int(rng.integers(2**32))
    random.seed(seed)
    np.random.seed(seed)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def colored_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white, pink (1/f power) or brown (1/f^2 power) noise."""
    white = rng.standard_normal(n)
    if kind != "white":
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n)
        freqs[0] = freqs[1]
        spectrum /= np.sqrt(freqs) if kind == "pink" else freqs
        white = np.fft.irfft(spectrum, n)
    return (white / (rms(white) + 1e-12)).astype(np.float32)


def hum(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS mains hum (50 or 60 Hz) with random harmonics, as from a cheap sound card."""
    t = np.arange(n) / rate
    mains = float(rng.choice([50.0, 60.0]))
    harmonics = int(rng.integers(1, 8))
    out = np.zeros(n)
    for h in range(1, harmonics + 1):
        out += rng.uniform(0.05, 1.0) / h * np.sin(2 * np.pi * mains * h * t + rng.uniform(0, 6.3))
    return (out / (rms(out) + 1e-12)).astype(np.float32)


def mix_at_snr(
    signal: np.ndarray, noise: np.ndarray, snr_db: float, reference: float | None = None
) -> np.ndarray:
    """``signal + noise`` with the noise scaled to ``snr_db`` below the signal's RMS.

    ``reference`` replaces the signal's RMS (the RMS of the speech alone, so leading silence in
    the window does not make the noise louder).
    """
    level = rms(signal) if reference is None else reference
    if level == 0.0:
        return signal
    return signal + noise * (level * 10 ** (-snr_db / 20) / (rms(noise) + 1e-12))


def _tones(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Music-like sound: notes of a random scale with harmonics and decaying envelopes."""
    out = np.zeros(n)
    t = np.arange(n) / rate
    start = 0
    while start < n:
        length = int(rng.integers(rate // 10, rate // 2))
        f0 = 110.0 * 2 ** (int(rng.integers(0, 36)) / 12)
        seg = t[: min(length, n - start)]
        note = sum(
            rng.uniform(0.1, 1.0) / h * np.sin(2 * np.pi * f0 * h * seg)
            for h in range(1, int(rng.integers(1, 6)) + 1)
        )
        out[start : start + seg.size] += note * np.exp(-seg * rng.uniform(0.5, 8.0))
        start += int(length * rng.uniform(0.5, 1.0))
    return out


def _sweep(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    f0, f1 = rng.uniform(50, rate / 2.5, size=2)
    phase = 2 * np.pi * np.cumsum(np.linspace(f0, f1, n)) / rate
    return np.sin(phase)


def _beep(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n)
    freq = rng.uniform(200, 4000)
    for _ in range(int(rng.integers(1, 5))):
        length = int(rng.integers(rate // 50, rate // 3))
        start = int(rng.integers(0, max(1, n - length)))
        seg = np.arange(min(length, n - start)) / rate
        out[start : start + seg.size] = np.sin(2 * np.pi * freq * seg)
    return out


def _clicks(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n)
    for _ in range(int(rng.integers(1, 30))):
        at = int(rng.integers(0, n))
        width = int(rng.integers(1, rate // 200 + 2))
        out[at : at + width] = rng.uniform(-1, 1, size=min(width, n - at))
    return out


def non_speech(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """One clip of the ``_silence_`` class: no speech, anything else a microphone may hear.

    Digital silence, hiss, coloured noise, hum, music-like notes, sweeps, beeps, clicks, and
    mixtures of them, at levels from -80 to -3 dBFS peak.
    """
    kinds = ("zero", "white", "pink", "brown", "hum", "tones", "sweep", "beep", "clicks")
    parts = rng.choice(kinds, size=int(rng.integers(1, 4)), replace=False)
    out = np.zeros(n)
    for kind in parts:
        if kind == "zero":
            continue
        if kind in _F_DECAY:
            part = colored_noise(str(kind), n, rng)
        elif kind == "hum":
            part = hum(n, rate, rng)
        else:
            part = {"tones": _tones, "sweep": _sweep, "beep": _beep, "clicks": _clicks}[kind](
                n, rate, rng
            )
        out += part / (np.abs(part).max() + 1e-12) * rng.uniform(0.05, 1.0)
    peak = np.abs(out).max()
    if peak > 0:
        out *= 10 ** (rng.uniform(-80, -3) / 20) / peak
    return out.astype(np.float32)


@cache
def _pra() -> Any:
    import pyroomacoustics

    return pyroomacoustics


def room_impulse(rate: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """A shoebox room's impulse response for ``rt60`` seconds (image-source method).

    The room's size is drawn so that Sabine's formula can reach the target (small rooms for
    short RT60s); source and microphone sit at random places inside it. The response starts at
    the direct path, so reverberation does not delay the word.
    """
    pra = _pra()
    for _ in range(20):
        scale = float(np.clip(rt60 * 8, 2.5, 10.0))
        dims = np.array([scale * rng.uniform(0.7, 1.3), scale * rng.uniform(0.6, 1.1), 0.0])
        dims[2] = rng.uniform(2.4, 4.0)
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dims)
        except ValueError:
            continue
        room = pra.ShoeBox(
            dims, fs=rate, materials=pra.Material(absorption), max_order=min(max_order, 30)
        )
        room.add_source(rng.uniform(0.5, dims - 0.5))
        room.add_microphone(rng.uniform(0.5, dims - 0.5))
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float64)
        rir = rir[int(np.argmax(np.abs(rir))) :]
        return (rir / (np.abs(rir).max() + 1e-12)).astype(np.float32)
    return np.ones(1, dtype=np.float32)


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with a room response, same length and RMS as the input."""
    from scipy.signal import fftconvolve

    wet = fftconvolve(x, rir)[: x.size]
    return (wet * (rms(x) / (rms(wet) + 1e-12))).astype(np.float32)


def _resample(x: np.ndarray, rate_in: float, rate_out: float) -> np.ndarray:
    """soxr through the project's one resampler (a fractional rate is a speed change)."""
    from arinext.model.audio_io import resample

    return resample(x, rate_in, rate_out)  # type: ignore[arg-type]


def telephone(x: np.ndarray, rate: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """A telephone line: 300-3400 Hz band, an 8 kHz round trip, and mu-law companding."""
    from scipy.signal import butter, sosfilt

    low = 300.0 if rng is None else rng.uniform(200, 400)
    high = 3400.0 if rng is None else rng.uniform(3000, 3600)
    sos = butter(4, [low, high], btype="bandpass", fs=rate, output="sos")
    y = _resample(sosfilt(sos, x).astype(np.float32), rate, 8000)
    peak = np.abs(y).max() + 1e-12
    mu = 255.0
    y = y / peak
    y = np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu)
    y = np.round(y * 127) / 127
    y = np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu * peak
    return _fit(_resample(y.astype(np.float32), 8000, rate), x.size)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Cut or zero-pad to ``n`` samples."""
    if x.size >= n:
        return x[:n]
    return np.pad(x, (0, n - x.size))


def _smooth_curve(n: int, rng: np.random.Generator, knots: int = 4) -> np.ndarray:
    """``n`` values in [-1, 1] that wander smoothly: random knots, linearly interpolated."""
    return np.interp(np.linspace(0, 1, n), np.linspace(0, 1, knots), rng.uniform(-1, 1, knots))


def vtlp(
    x: np.ndarray,
    rate: int,
    alpha: float,
    f_hi: float = 4800.0,
    *,
    drift: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Vocal-tract-length perturbation: warp the spectrum's frequency axis by ``alpha``.

    Jaitly & Hinton's piecewise-linear warp (``f -> alpha f`` up to a boundary, then linear to
    Nyquist so the band edge stays put), applied to STFT magnitudes with the original phase.
    With ``drift`` (and ``rng``) the factor wanders by up to ``alpha * drift`` along the clip,
    so formant trajectories move as well as formants: a synthesiser's vowel-to-vowel
    transitions follow its own rules, a speaker's do not.
    """
    from scipy.signal import istft, stft

    nfft = 512
    _, _, spec = stft(x, fs=rate, nperseg=nfft, noverlap=nfft * 3 // 4)
    nyquist = rate / 2
    freqs = np.linspace(0, nyquist, spec.shape[0])
    frames = spec.shape[1]
    alphas = np.full(frames, alpha)
    if drift:
        if rng is None:
            raise ValueError("a drifting warp needs rng")
        alphas = alpha * (1 + drift * _smooth_curve(frames, rng))
    magnitude = np.abs(spec)
    warped_mag = np.empty_like(magnitude)
    for t in range(frames):
        a = float(alphas[t])
        boundary = f_hi * min(a, 1.0) / a
        warped = np.where(
            freqs <= boundary,
            freqs * a,
            nyquist - (nyquist - f_hi * min(a, 1.0)) / (nyquist - boundary) * (nyquist - freqs),
        )
        # Output bin f takes the magnitude found at the source frequency warp^-1(f).
        warped_mag[:, t] = np.interp(np.interp(freqs, warped, freqs), freqs, magnitude[:, t])
    _, y = istft(
        warped_mag * np.exp(1j * np.angle(spec)), fs=rate, nperseg=nfft, noverlap=nfft * 3 // 4
    )
    y = _fit(y.astype(np.float32), x.size)
    return (y * (rms(x) / (rms(y) + 1e-12))).astype(np.float32)


def time_warp(x: np.ndarray, rate: int, depth: float, rng: np.random.Generator) -> np.ndarray:
    """Non-uniform tempo: parts of the word stretched, others squeezed, pitch kept.

    espeak-ng times every phoneme by rule, so a uniform tempo change keeps its rhythm; people
    and other synthesisers lengthen and shorten sounds differently. A phase vocoder reads the
    STFT at a local rate that wanders smoothly between ``1 - depth`` and ``1 + depth``
    (``0 <= depth < 1``). The output lasts the input's duration times the mean of ``1 / rate``
    (the chain centres it back into the window).
    """
    from scipy.signal import istft, stft

    if not 0.0 <= depth < 1.0:
        raise ValueError(f"depth must be in [0, 1), got {depth}")
    nfft, hop = 512, 128
    if x.size < 2 * nfft:  # too short to warp
        return x.astype(np.float32, copy=True)
    _, _, spec = stft(x, fs=rate, nperseg=nfft, noverlap=nfft - hop)
    frames = spec.shape[1]
    local_rate = 1 + depth * _smooth_curve(frames, rng, knots=int(rng.integers(3, 7)))
    # Output time at each source frame; output frame j reads the source where that time is j.
    out_time = np.concatenate([[0.0], np.cumsum(1 / local_rate[:-1])])
    source = np.interp(np.arange(int(out_time[-1]) + 1), out_time, np.arange(frames))
    index = np.minimum(source.astype(int), frames - 2)
    frac = (source - index)[None, :]
    left, right = spec[:, index], spec[:, index + 1]
    magnitude = (1 - frac) * np.abs(left) + frac * np.abs(right)
    advance = (2 * np.pi * hop * np.arange(spec.shape[0]) / nfft)[:, None]
    step = np.angle(right) - np.angle(left) - advance
    step = step - 2 * np.pi * np.round(step / (2 * np.pi)) + advance
    phase = np.angle(spec[:, :1]) + np.concatenate(
        [np.zeros((spec.shape[0], 1)), np.cumsum(step[:, :-1], axis=1)], axis=1
    )
    _, y = istft(magnitude * np.exp(1j * phase), fs=rate, nperseg=nfft, noverlap=nfft - hop)
    y = y.astype(np.float32)
    return (y * (rms(x) / (rms(y) + 1e-12))).astype(np.float32)


@dataclass(frozen=True)
class AugmentSettings:
    """Probabilities and ranges of the training chain (a run's config only switches it on:
    ``augment.waveform``)."""

    speed: tuple[float, float] = (0.85, 1.15)
    p_speed: float = 0.4
    pitch_semitones: float = 3.0
    p_pitch: float = 0.3
    tempo: tuple[float, float] = (0.8, 1.25)
    p_tempo: float = 0.3
    warp_depth: float = 0.35
    p_warp: float = 0.4
    vtlp: tuple[float, float] = (0.82, 1.2)
    vtlp_drift: float = 0.06
    p_vtlp: float = 0.5
    p_eq: float = 0.4
    p_band: float = 0.25
    p_room: float = 0.4
    rt60: tuple[float, float] = (0.1, 1.0)
    p_noise: float = 0.8
    snr_db: tuple[float, float] = (0.0, 30.0)
    p_quiet: float = 0.15
    quiet_db: tuple[float, float] = (-40.0, -15.0)
    shift_s: float = 0.15
    p_shift: float = 0.5


class WaveformAugmenter:
    """The training chain: voice, channel, room, background, level, position.

    ``babble`` returns other speech at the model's rate (other training clips) to mix in as
    background chatter; it is never added to the ``_silence_`` class, which must stay free of
    speech.
    """

    def __init__(
        self,
        rate: int,
        settings: AugmentSettings | None = None,
        *,
        rooms: int = 128,
        seed: int = 0,
        recorded_noise: Sequence[np.ndarray] = (),
    ) -> None:
        self.rate = rate
        # Long recordings of real rooms and noise (Speech Commands' _background_noise_): a
        # random stretch of one is a background as likely as any synthetic kind.
        self.recorded_noise = [x for x in recorded_noise if x.size >= rate]
        self.s = settings or AugmentSettings()
        self._audiomentations: dict[str, Any] = {}
        # Simulating a room costs far more than the rest of the chain: draw a bank once
        # (RT60s spread evenly over the range) and pick from it per clip.
        rng = np.random.default_rng(seed)
        self.rooms = [
            room_impulse(rate, rt60, rng) for rt60 in np.linspace(*self.s.rt60, num=rooms)
        ]

    def _transform(self, name: str) -> Any:
        """audiomentations objects, built once per worker (they hold only their ranges)."""
        if not self._audiomentations:
            import audiomentations as am

            s = self.s
            self._audiomentations = {
                "pitch": am.PitchShift(-s.pitch_semitones, s.pitch_semitones, p=1.0),
                "tempo": am.TimeStretch(*s.tempo, leave_length_unchanged=False, p=1.0),
                "eq": am.SevenBandParametricEQ(-12.0, 12.0, p=1.0),
                "bandpass": am.BandPassFilter(min_center_freq=800.0, max_center_freq=2500.0, p=1.0),
                "lowpass": am.LowPassFilter(min_cutoff_freq=1500.0, max_cutoff_freq=7000.0, p=1.0),
            }
        return self._audiomentations[name]

    def _apply(self, name: str, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _seed_globals(rng)
        return np.asarray(self._transform(name)(x, self.rate), dtype=np.float32)

    def __call__(
        self,
        x: np.ndarray,
        rng: np.random.Generator,
        *,
        is_speech: bool = True,
        babble: Callable[[np.random.Generator], np.ndarray] | None = None,
    ) -> np.ndarray:
        s, n, rate = self.s, x.size, self.rate
        y = x.astype(np.float32, copy=True)
        if is_speech:
            if rng.random() < s.p_speed:
                y = _resample(y, rate * rng.uniform(*s.speed), rate)
            if rng.random() < s.p_tempo:
                y = self._apply("tempo", y, rng)
            if rng.random() < s.p_warp:
                y = time_warp(y, rate, s.warp_depth, rng)
            if rng.random() < s.p_pitch:
                y = self._apply("pitch", y, rng)
            if rng.random() < s.p_vtlp:
                y = vtlp(y, rate, rng.uniform(*s.vtlp), drift=s.vtlp_drift, rng=rng)
            y = _centre_fit(y, n)
            if rng.random() < s.p_shift:
                y = _shift(y, int(rng.uniform(-s.shift_s, s.shift_s) * rate))
        speech_level = rms(y)
        if rng.random() < s.p_room:
            y = reverberate(y, self.rooms[int(rng.integers(len(self.rooms)))])
        if rng.random() < s.p_eq:
            y = self._apply("eq", y, rng)
        if rng.random() < s.p_noise:
            y = mix_at_snr(
                y,
                self._background(n, rng, babble if is_speech else None),
                rng.uniform(*s.snr_db),
                speech_level or None,
            )
        band = rng.random()
        if band < s.p_band / 2:
            y = telephone(y, rate, rng)
        elif band < s.p_band:
            y = self._apply("bandpass" if rng.random() < 0.3 else "lowpass", y, rng)
        y = _normalise(y, rng)
        if rng.random() < s.p_quiet:
            y = quiet_over_floor(y, rate, rng.uniform(*s.quiet_db), rng)
        return np.clip(y, -1.0, 1.0).astype(np.float32)

    def _background(
        self,
        n: int,
        rng: np.random.Generator,
        babble: Callable[[np.random.Generator], np.ndarray] | None,
    ) -> np.ndarray:
        kinds = ["white", "pink", "brown", "hum", "babble", "mix"]
        kind = rng.choice([*kinds, "recorded", "recorded"] if self.recorded_noise else kinds)
        if kind == "recorded":
            source = self.recorded_noise[int(rng.integers(len(self.recorded_noise)))]
            start = int(rng.integers(0, source.size - n + 1)) if source.size > n else 0
            return _fit(source[start : start + n], n)
        if kind == "babble" and babble is not None:
            talkers = int(rng.integers(3, 7))
            return np.sum([_fit(babble(rng), n) for _ in range(talkers)], axis=0)
        if kind == "hum":
            return hum(n, self.rate, rng)
        if kind == "mix":
            return hum(n, self.rate, rng) + colored_noise("white", n, rng) * rng.uniform(0.1, 1)
        return colored_noise(str(kind if kind in _F_DECAY else "pink"), n, rng)


def _centre_fit(x: np.ndarray, n: int) -> np.ndarray:
    """Back to ``n`` samples after a speed or tempo change, keeping the middle (the word)."""
    if x.size == n:
        return x
    if x.size > n:
        start = (x.size - n) // 2
        return x[start : start + n]
    left = (n - x.size) // 2
    return np.pad(x, (left, n - x.size - left))


def _shift(x: np.ndarray, by: int) -> np.ndarray:
    """Move the content by ``by`` samples, zero-filling (the word moves within the window)."""
    if by == 0:
        return x
    out = np.zeros_like(x)
    if by > 0:
        out[by:] = x[:-by]
    else:
        out[:by] = x[-by:]
    return out


def _normalise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Peak to a random level between -30 and -1 dBFS."""
    peak = np.abs(x).max()
    if peak == 0:
        return x
    return x * (10 ** (rng.uniform(-30, -1) / 20) / peak)


def quiet_over_floor(
    x: np.ndarray,
    rate: int,
    speech_db: float,
    rng: np.random.Generator,
    *,
    hiss: float | None = None,
    floor_snr_db: float | None = None,
) -> np.ndarray:
    """Speech far from the microphone: scaled to ``speech_db`` peak over a hum-and-hiss floor.

    The floor sits ``floor_snr_db`` below the speech (drawn from 20-35 dB, as a quiet room's
    electrical noise does); ``hiss`` is the white noise's level against the hum (drawn from
    0.3-1.0). Fixed values make it the out-of-domain test's condition.
    """
    n = x.size
    y = x * (10 ** (speech_db / 20) / (np.abs(x).max() + 1e-12))
    mains, white = hum(n, rate, rng), colored_noise("white", n, rng)
    level = rng.uniform(0.3, 1.0) if hiss is None else hiss
    snr_db = rng.uniform(20.0, 35.0) if floor_snr_db is None else floor_snr_db
    return mix_at_snr(y, mains + white * level, snr_db)


def degrade(x: np.ndarray, rate: int, condition: str, seed: int) -> np.ndarray:
    """One of :data:`CONDITIONS`, deterministic for ``seed`` (the out-of-domain test's clips)."""
    rng = np.random.default_rng(seed)
    y = x.astype(np.float32, copy=True)
    if condition == "clean":
        return y
    if condition == "noise_10db":
        kind = str(rng.choice(["white", "pink", "brown"]))
        return np.clip(mix_at_snr(y, colored_noise(kind, y.size, rng), 10.0), -1, 1)
    if condition == "reverb_0.5s":
        return np.clip(reverberate(y, room_impulse(rate, 0.5, rng)), -1, 1)
    if condition == "telephone":
        return np.clip(telephone(y, rate), -1, 1)
    if condition == "quiet_-30db":
        quiet = quiet_over_floor(y, rate, -30.0, rng, hiss=0.5, floor_snr_db=20.0)
        return np.clip(quiet, -1, 1).astype(np.float32)
    raise ValueError(f"unknown condition {condition!r}; expected one of {', '.join(CONDITIONS)}")
