"""The default model's waveform augmentation and the out-of-domain test's degradations.

Each degradation is checked for the physical property it claims (SNR, band, RT60, level), not
just for running; the chain is checked for determinism and for never putting speech (babble)
into the non-speech class.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("audiomentations")
pytest.importorskip("pyroomacoustics")

from arinext.training.waveform_augment import (
    CONDITIONS,
    WaveformAugmenter,
    colored_noise,
    degrade,
    hum,
    mix_at_snr,
    non_speech,
    rms,
    room_impulse,
    telephone,
    time_warp,
    vtlp,
)

RATE = 16000


def _voiced(seconds: float = 1.0) -> np.ndarray:
    """A vowel-like test signal: 120 Hz harmonics under a formant-ish envelope, faded in/out."""
    t = np.arange(int(RATE * seconds)) / RATE
    x = sum(np.sin(2 * np.pi * 120 * h * t) / h for h in range(1, 40))
    return (x * np.hanning(t.size) * 0.3).astype(np.float32)


def _band_energy(x: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / RATE)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum() / spectrum.sum())


@pytest.fixture(scope="module")
def augmenter() -> WaveformAugmenter:
    return WaveformAugmenter(RATE, rooms=8, seed=3)


def test_chain_keeps_length_range_and_is_deterministic(augmenter: WaveformAugmenter) -> None:
    x = _voiced()
    babble = lambda rng: _voiced() * rng.uniform(0.2, 1.0)  # noqa: E731
    runs = []
    for _ in range(2):
        rng = np.random.default_rng(11)
        runs.append([augmenter(x, rng, babble=babble) for _ in range(12)])
    for a, b in zip(*runs, strict=True):
        assert a.shape == x.shape and a.dtype == np.float32
        assert np.isfinite(a).all() and np.abs(a).max() <= 1.0
        np.testing.assert_array_equal(a, b)
    assert len({float(rms(a)) for a in runs[0]}) == 12  # every clip drew its own chain


def test_non_speech_never_gets_babble(augmenter: WaveformAugmenter) -> None:
    def babble(rng: np.random.Generator) -> np.ndarray:
        raise AssertionError("babble is speech: not for the _silence_ class")

    rng = np.random.default_rng(0)
    for _ in range(40):
        out = augmenter(non_speech(RATE, RATE, rng), rng, is_speech=False, babble=babble)
        assert np.isfinite(out).all()


def test_noise_colours_have_their_slopes() -> None:
    rng = np.random.default_rng(0)
    n = RATE * 4
    kinds = ("white", "pink", "brown")
    lows = {k: _band_energy(colored_noise(k, n, rng), 0, 400) for k in kinds}
    assert lows["white"] < 0.06 < lows["pink"] < lows["brown"]
    for kind in ("white", "pink", "brown"):
        assert abs(rms(colored_noise(kind, n, rng)) - 1.0) < 1e-3
    mains = hum(n, RATE, rng)
    assert _band_energy(mains, 40, 500) > 0.95


def test_mix_at_snr_hits_the_ratio() -> None:
    rng = np.random.default_rng(1)
    speech, noise = _voiced(), colored_noise("white", RATE, rng)
    mixed = mix_at_snr(speech, noise, 10.0)
    added = mixed - speech
    assert 20 * np.log10(rms(speech) / rms(added)) == pytest.approx(10.0, abs=1e-3)


def test_room_impulse_has_the_requested_rt60() -> None:
    import pyroomacoustics as pra

    for rt60 in (0.3, 0.5, 0.9):
        rir = room_impulse(RATE, rt60, np.random.default_rng(int(rt60 * 10)))
        measured = pra.experimental.measure_rt60(rir, fs=RATE)
        assert measured == pytest.approx(rt60, rel=0.35), (rt60, measured)
        assert int(np.argmax(np.abs(rir))) == 0  # starts at the direct path: no added delay


def test_telephone_keeps_the_voice_band_only() -> None:
    rng = np.random.default_rng(2)
    wide = colored_noise("white", RATE, rng) * 0.1
    line = telephone(wide, RATE)
    assert line.shape == wide.shape
    assert _band_energy(line, 4200, 8000) < 0.01
    assert _band_energy(line, 0, 150) < 0.02
    assert _band_energy(wide, 4200, 8000) > 0.4


def test_vtlp_moves_the_spectrum_and_keeps_level() -> None:
    x = _voiced()

    def centroid(y: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(y))
        return float((np.fft.rfftfreq(y.size, 1 / RATE) * spectrum).sum() / spectrum.sum())

    up, down = vtlp(x, RATE, 1.15), vtlp(x, RATE, 0.87)
    assert centroid(down) < centroid(x) < centroid(up)
    for y in (up, down):
        assert y.shape == x.shape and rms(y) == pytest.approx(rms(x), rel=1e-3)


def _crossings_per_second(y: np.ndarray) -> np.ndarray:
    """Zero crossings per second in 20 ms frames every 10 ms (twice a pure tone's frequency)."""
    frame, step = RATE // 50, RATE // 100
    return np.array(
        [
            np.count_nonzero(np.diff(np.signbit(y[i : i + frame]))) * 50
            for i in range(0, y.size - frame, step)
        ]
    )


def test_time_warp_moves_sounds_unevenly_and_keeps_pitch() -> None:
    t = np.arange(RATE) / RATE
    two_tones = (0.3 * np.sin(2 * np.pi * np.where(t < 0.5, 440, 880) * t)).astype(np.float32)
    switch_at = []
    for seed in range(6):
        y = time_warp(two_tones, RATE, 0.35, np.random.default_rng(seed))
        rate = _crossings_per_second(y)
        assert np.median(rate[:10]) == pytest.approx(880, rel=0.05)  # pitch kept
        assert np.median(rate[-10:]) == pytest.approx(1760, rel=0.05)
        # Each half is stretched or squeezed by a local rate between 0.65 and 1.35.
        switch = (np.argmax(rate > 1320) + 2) * RATE // 100
        for part in (switch, y.size - switch):
            assert RATE / 2 / 1.35 - 400 < part < RATE / 2 / 0.65 + 400, (seed, part)
        switch_at.append(switch / y.size)
    # A uniform tempo change would keep the switch half-way through; here it moves.
    assert max(abs(f - 0.5) for f in switch_at) > 0.05
    with pytest.raises(ValueError, match="depth"):
        time_warp(two_tones, RATE, 1.0, np.random.default_rng(0))
    short = two_tones[:600]  # shorter than the warp's frames: left alone
    assert np.array_equal(time_warp(short, RATE, 0.35, np.random.default_rng(0)), short)
    again = time_warp(two_tones, RATE, 0.35, np.random.default_rng(0))
    assert np.array_equal(again, time_warp(two_tones, RATE, 0.35, np.random.default_rng(0)))


def test_vtlp_drift_moves_formants_along_the_clip() -> None:
    x = _voiced()

    def centroids(y: np.ndarray) -> np.ndarray:
        frames = y[: y.size // 1600 * 1600].reshape(-1, 1600)
        spectra = np.abs(np.fft.rfft(frames * np.hanning(1600), axis=1))
        freqs = np.fft.rfftfreq(1600, 1 / RATE)
        return (spectra * freqs).sum(axis=1) / spectra.sum(axis=1)

    with pytest.raises(ValueError, match="rng"):
        vtlp(x, RATE, 1.1, drift=0.1)
    steady = centroids(vtlp(x, RATE, 1.1))
    drifting = centroids(vtlp(x, RATE, 1.1, drift=0.1, rng=np.random.default_rng(3)))
    spread = np.ptp(centroids(x)[1:-1])
    assert np.ptp(steady[1:-1]) < spread + 20
    assert np.ptp(drifting[1:-1]) > np.ptp(steady[1:-1]) + 40


def test_non_speech_levels_and_kinds() -> None:
    rng = np.random.default_rng(4)
    clips = [non_speech(RATE, RATE, rng) for _ in range(60)]
    peaks = [float(np.abs(c).max()) for c in clips]
    assert all(p <= 10 ** (-3 / 20) + 1e-6 for p in peaks)
    assert min(p for p in peaks if p > 0) < 10 ** (-50 / 20)  # some are very quiet
    assert all(np.isfinite(c).all() and c.shape == (RATE,) for c in clips)


@pytest.mark.parametrize("condition", CONDITIONS)
def test_conditions_are_deterministic_and_do_what_they_say(condition: str) -> None:
    x = _voiced()
    a, b = degrade(x, RATE, condition, 5), degrade(x, RATE, condition, 5)
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape and np.abs(a).max() <= 1.0
    if condition == "clean":
        np.testing.assert_array_equal(a, x)
    elif condition == "noise_10db":
        assert 20 * np.log10(rms(x) / rms(a - x)) == pytest.approx(10.0, abs=0.1)
    elif condition == "telephone":
        assert _band_energy(a, 4200, 8000) < 0.01
    elif condition == "quiet_-30db":
        assert 20 * np.log10(np.abs(a).max()) == pytest.approx(-30.0, abs=2.0)
    elif condition == "reverb_0.5s":
        assert not np.allclose(a, x) and rms(a) == pytest.approx(rms(x), rel=0.05)


def test_unknown_condition_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown condition"):
        degrade(_voiced(), RATE, "underwater", 0)
