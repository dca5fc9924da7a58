"""Live-detection scenes: each word at the SNR drawn for it, whatever the background's level."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from arinext.training.scenes import SNR_DB, build_scenes, match_detections
from tests.training.test_recordings import _speakers

RATE = 16000


def _recordings(root: Path, noise_rms: float) -> Path:
    """Words that are full-scale tones (peak 1) and one long background at ``noise_rms``."""
    rng = np.random.default_rng(0)
    t = np.arange(RATE) / RATE
    for k, speaker in enumerate(_speakers(40)):
        tone = np.zeros(RATE)
        tone[4000:12000] = np.sin(2 * np.pi * (300 + 20 * k) * t[4000:12000])
        path = root / "yes" / f"{speaker}_nohash_0.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone, RATE, format="FLAC")
    background = root / "_background_noise_" / "room.flac"
    background.parent.mkdir(parents=True)
    sf.write(background, rng.normal(0, noise_rms, 80 * RATE).clip(-1, 1), RATE, format="FLAC")
    return root


@pytest.mark.parametrize("noise_rms", [0.003, 0.3])
def test_every_word_is_at_an_snr_in_the_drawn_range(tmp_path: Path, noise_rms: float) -> None:
    # A loud background (0.3 RMS, as some Speech Commands room clips) once pushed words whose
    # own peak is 1 far below the range: their gain was capped to keep each word under 1.
    folder = _recordings(tmp_path, noise_rms)
    for scene in build_scenes(folder, 4, split="test", seed=2):
        assert np.abs(scene.samples).max() <= 1.0
        quiet = scene.samples[: int(scene.words[0].start * RATE) - RATE // 4]
        noise_power = np.mean(quiet**2)
        for word in scene.words:
            voiced = scene.samples[int(word.start * RATE) : int(word.end * RATE)]
            snr = 10 * np.log10((np.mean(voiced**2) - noise_power) / noise_power)
            assert SNR_DB[0] - 1 <= snr <= SNR_DB[1] + 1, snr


def test_words_are_where_the_scene_says_and_detections_match_them(tmp_path: Path) -> None:
    folder = _recordings(tmp_path, 0.01)
    (scene,) = build_scenes(folder, 1, split="test", seed=5)
    for word in scene.words:  # the tone's 0.5 s, a second or more from the next word
        assert word.end - word.start == pytest.approx(0.5, abs=0.02)
    assert all(b.start - a.end >= 1.0 for a, b in itertools.pairwise(scene.words))
    first = scene.words[0]
    hits = [("yes", first.start - 0.2, first.end + 0.2), ("yes", first.end + 0.1, first.end + 0.3)]
    assert match_detections(scene.words, hits) == (1, 1)  # the second overlaps no word
