"""The training data path's evaluation views equal what the service computes for the same file.

The service decodes uploads with ``arinext.service.decoding`` and windows them with
``arinext.service.predict.window_starts`` before the shared ``arinext.model.frontend``; training
decodes files with soundfile and resamples with soxr (same semantics, no serving dependencies). Both
paths run here on the same files, including a stereo file at another rate, which exercises
down-mixing and resampling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from arinext.model.audio_config import get_preset
from arinext.model.frontend import clip_view, view_starts
from arinext.service.decoding import decode_audio, resample
from arinext.service.predict import window_starts
from arinext.service.prepare import features
from arinext.training.datasets import ClipDataset
from arinext.training.datasets.base import Clip, ClipIndex
from tests.training.conftest import write_wav


def _service_views(path: Path, preset: str, starts_of) -> np.ndarray:
    cfg = get_preset(preset)
    decoded = decode_audio(path.read_bytes(), max_seconds=600)
    samples = resample(decoded.samples, decoded.sample_rate, cfg.sample_rate)
    return np.stack([clip_view(samples, s, cfg) for s in starts_of(len(samples), cfg)])[:, None]


@pytest.mark.parametrize(
    ("preset", "seconds", "rate", "channels"),
    [
        ("urbansound8k", 3.0, 44100, 2),  # short: one padded view
        ("urbansound8k", 7.5, 48000, 1),  # two views, both paths agree on where
        ("vggsound", 9.0, 16000, 1),
        ("speech_commands", 1.0, 16000, 1),
    ],
)
def test_eval_views_equal_the_service(
    tmp_path: Path, preset: str, seconds: float, rate: int, channels: int
) -> None:
    rng = np.random.default_rng(0)
    shape = (int(seconds * rate), channels) if channels > 1 else (int(seconds * rate),)
    path = write_wav(tmp_path / "clip.wav", rng.uniform(-0.5, 0.5, shape), rate)
    cfg = get_preset(preset)
    index = ClipIndex(preset, "test", [Clip(str(path), (0,))], {preset: ["a"]})
    training_views, _, _ = ClipDataset(index, cfg, "eval")[0]

    # The service's windows include the protocol's test views (the first window starts at 0,
    # the last ends at the end), and it computes exactly these network inputs there.
    decoded = decode_audio(path.read_bytes(), max_seconds=600)
    n = len(resample(decoded.samples, decoded.sample_rate, cfg.sample_rate))
    assert set(view_starts(n, cfg)) <= set(window_starts(n, cfg))
    np.testing.assert_array_equal(
        training_views, _service_views(path, preset, lambda n, c: view_starts(n, c))
    )


def test_longer_clips_match_at_the_protocol_views(tmp_path: Path) -> None:
    """Beyond two views the service covers the clip more densely; the views still agree."""
    rng = np.random.default_rng(1)
    path = write_wav(tmp_path / "long.wav", rng.uniform(-0.5, 0.5, 24000 * 12), 24000)
    cfg = get_preset("epic_sounds")  # 5 test views of 2.08 s
    index = ClipIndex("epic_sounds", "test", [Clip(str(path), (0,))], {"epic_sounds": ["a"]})
    training_views, _, _ = ClipDataset(index, cfg, "eval")[0]
    assert len(training_views) == 5
    np.testing.assert_array_equal(
        training_views, _service_views(path, "epic_sounds", lambda n, c: view_starts(n, c))
    )


def test_each_window_of_a_long_clip_is_computed_on_its_own_samples(tmp_path: Path) -> None:
    """A window of a long clip (``hop``, streams) sees exactly what training saw for a clip of
    that window's samples alone, edges included."""
    rng = np.random.default_rng(3)
    cfg = get_preset("speech_commands")
    samples = rng.uniform(-0.5, 0.5, int(3.3 * cfg.sample_rate)).astype(np.float32)
    starts = window_starts(len(samples), cfg, hop_seconds=0.25)
    views = features(samples, starts, cfg)
    assert len(starts) > 5
    for start, view in zip(starts, views, strict=True):
        alone = samples[start : start + cfg.clip_samples]
        path = write_wav(tmp_path / f"{start}.wav", alone, cfg.sample_rate, subtype="FLOAT")
        index = ClipIndex("speech_commands", "test", [Clip(str(path), (0,))], {"sc": ["a"]})
        training_views, _, _ = ClipDataset(index, cfg, "eval")[0]
        np.testing.assert_array_equal(training_views[0], view)
