"""Golden-value and property tests of the numpy log-mel front-end.

The golden arrays were computed by the authors' librosa front-end; matching them to 1e-4 is what
lets an imported checkpoint see the inputs it was trained on.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from arinext.model.audio_config import PRESETS, get_preset
from arinext.model.frontend import (
    clip_view,
    fit_frames,
    log_mel,
    log_mel_views,
    mel_filterbank,
    view_starts,
)
from tests.fixtures import FRONTEND_EXPECTED

FRONTEND_NPZ = FRONTEND_EXPECTED
GOLDEN_PRESETS = ("vggsound", "speech_commands", "epic_sounds", "nsynth")


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(FRONTEND_NPZ) as data:
        return {key: data[key] for key in data.files}


def _golden_cases() -> list[tuple[str, int, int]]:
    """(preset, views, view index) for every logmel key the fixture file holds."""
    with np.load(FRONTEND_NPZ) as data:
        keys = set(data.files)
    cases = []
    for preset in GOLDEN_PRESETS:
        for views, index in ((1, 0), (2, 1)):
            if f"{preset}_logmel_view{index}of{views}" in keys:
                cases.append((preset, views, index))
    return cases


def test_fixture_covers_every_preset(golden: dict[str, np.ndarray]) -> None:
    for preset in GOLDEN_PRESETS:
        assert f"{preset}_wave" in golden
        assert f"{preset}_logmel_view0of1" in golden


@pytest.mark.parametrize(("preset", "views", "index"), _golden_cases())
def test_matches_reference_frontend(
    golden: dict[str, np.ndarray], preset: str, views: int, index: int
) -> None:
    cfg = get_preset(preset)
    wave = golden[f"{preset}_wave"]
    expected = golden[f"{preset}_logmel_view{index}of{views}"]
    start = view_starts(len(wave), cfg, views=views)[index]
    got = clip_view(wave, start, cfg)
    assert got.dtype == np.float32
    assert got.shape == expected.shape == (cfg.num_frames, cfg.n_mels)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_log_mel_views_stacks_the_same_views(golden: dict[str, np.ndarray]) -> None:
    cfg = get_preset("vggsound")
    batch = log_mel_views(golden["vggsound_wave"], cfg, views=2)
    assert batch.shape == (2, 1, cfg.num_frames, cfg.n_mels)
    np.testing.assert_allclose(batch[1, 0], golden["vggsound_logmel_view1of2"], atol=1e-4)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_frame_counts(preset: str) -> None:
    """One view of a long clip is exactly num_frames frames, uncropped (512 or 416)."""
    cfg = PRESETS[preset]
    assert cfg.num_frames in (512, 416)
    # The reference slices clip_samples - 1 samples; that alone must give num_frames frames.
    assert 1 + (cfg.clip_samples - 1) // cfg.hop_length == cfg.num_frames
    wave = np.random.default_rng(0).standard_normal(cfg.clip_samples * 2).astype(np.float32)
    assert log_mel(wave[: cfg.clip_samples - 1], cfg).shape == (cfg.num_frames, cfg.n_mels)
    for start in view_starts(len(wave), cfg, views=3):
        assert clip_view(wave, start, cfg).shape == (cfg.num_frames, cfg.n_mels)


def test_short_clip_repeats_last_frame() -> None:
    cfg = get_preset("vggsound")
    wave = np.random.default_rng(1).standard_normal(cfg.clip_samples // 3).astype(np.float32)
    spec = log_mel(wave, cfg)
    assert view_starts(len(wave), cfg) == [0]
    view = clip_view(wave, 0, cfg)
    assert view.shape == (cfg.num_frames, cfg.n_mels)
    np.testing.assert_array_equal(view[: len(spec)], spec)
    padding = np.repeat(spec[-1:], cfg.num_frames - len(spec), axis=0)
    np.testing.assert_array_equal(view[len(spec) :], padding)


def test_fit_frames_crops_long_spectrograms() -> None:
    spec = np.arange(20, dtype=np.float32).reshape(10, 2)
    np.testing.assert_array_equal(fit_frames(spec, 4), spec[:4])


def test_presets_are_frozen() -> None:
    cfg = get_preset("vggsound")
    with pytest.raises(ValidationError):
        cfg.sample_rate = 8000
    assert PRESETS["vggsound"].sample_rate == 16000
    with pytest.raises(KeyError, match="known"):
        get_preset("no_such_preset")


def _htk_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _htk_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def test_filterbank_is_htk_triangles_with_unit_peaks() -> None:
    """Centres evenly spaced on the HTK mel scale, triangles of height 1 (no area norm)."""
    sr, n_fft, n_mels = 16000, 2**15, 128
    fb = mel_filterbank(sr, n_fft, n_mels, 0.0, sr / 2)
    freqs = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    edges = _htk_hz(np.linspace(0.0, _htk_mel(np.float64(sr / 2)), n_mels + 2))
    assert fb.shape == (n_mels, n_fft // 2 + 1)
    assert fb.min() >= 0.0
    assert fb.max() <= 1.0 + 1e-6
    bin_hz = freqs[1]
    for m in range(n_mels):
        lower, centre, upper = edges[m : m + 3]
        row = fb[m]
        # Peak 1 at the centre frequency (within one FFT bin of this fine grid).
        assert row.max() > 1.0 - bin_hz / (centre - lower) - 1e-6
        assert abs(freqs[row.argmax()] - centre) <= bin_hz
        # Support strictly inside the neighbouring centres.
        support = freqs[row > 0]
        assert support.min() > lower
        assert support.max() < upper


def test_default_filterbank_partitions_unity() -> None:
    """Between the first and last centre, adjacent triangles sum to exactly 1."""
    cfg = get_preset("vggsound")
    fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.mel_fmax)
    freqs = np.linspace(0.0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    edges = _htk_hz(np.linspace(0.0, _htk_mel(np.float64(cfg.mel_fmax)), cfg.n_mels + 2))
    inside = (freqs >= edges[1]) & (freqs <= edges[-2])
    np.testing.assert_allclose(fb[:, inside].sum(axis=0), 1.0, atol=1e-5)
