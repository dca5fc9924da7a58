"""A stream's views from reused frames equal views computed whole (issue #37, criterion 2)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from arinext.model.audio_config import PRESETS, AudioConfig
from arinext.model.frontend import IncrementalViews, clip_view, window_start

# The embedded default model's front-end (32 ms windows, 20 ms hop), beside the paper's presets.
DEFAULT_MODEL = AudioConfig(
    name="speech_commands",
    sample_rate=16000,
    window_ms=32,
    hop_ms=20,
    clip_seconds=1.0,
    num_frames=50,
    n_mels=128,
    n_fft=2048,
    fmin=0.0,
    log_offset=1e-6,
    test_views=1,
)
CONFIGS = {**PRESETS, "default_model": DEFAULT_MODEL}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("hop_seconds", [0.25, 0.1, 0.37, None])
def test_views_from_reused_frames_equal_whole_windows(name: str, hop_seconds: float | None) -> None:
    cfg = CONFIGS[name]
    rng = np.random.default_rng(abs(hash((name, hop_seconds))) % 2**32)
    # None: three frame hops, the one hop whose windows share nearly every frame.
    hop = 3 * cfg.hop_length if hop_seconds is None else round(hop_seconds * cfg.sample_rate)
    length = cfg.clip_samples + 5 * hop  # six windows
    stream = (rng.normal(0, 0.1, length) * rng.uniform(0, 2)).astype(np.float32)
    incremental = IncrementalViews(cfg)
    starts = list(range(0, len(stream) - cfg.clip_samples + 1, hop))
    for start in starts:
        window = stream[start : start + cfg.clip_samples]
        got = incremental.view(window, start)
        assert got.shape == (cfg.num_frames, cfg.n_mels)
        assert np.abs(got - clip_view(window, 0, cfg)).max() <= 1e-6
    assert incremental.reused > 0  # windows did share frames
    total = incremental.reused + incremental.computed
    assert total == len(starts) * min(cfg.num_frames, 1 + (cfg.clip_samples - 1) // cfg.hop_length)


def test_a_stream_shorter_than_a_view_is_padded_as_a_clip() -> None:
    cfg = DEFAULT_MODEL
    short = np.random.default_rng(0).normal(0, 0.1, cfg.clip_samples // 3).astype(np.float32)
    assert np.array_equal(IncrementalViews(cfg).view(short, 0), clip_view(short, 0, cfg))


def test_frames_behind_the_window_are_forgotten() -> None:
    cfg = DEFAULT_MODEL
    stream = np.random.default_rng(1).normal(0, 0.1, 60 * cfg.sample_rate).astype(np.float32)
    incremental = IncrementalViews(cfg)
    for start in range(0, len(stream) - cfg.clip_samples + 1, cfg.sample_rate // 4):
        incremental.view(stream[start : start + cfg.clip_samples], start)
    assert len(incremental._frames) <= 2 * cfg.num_frames  # a window's worth per phase, not 60 s


@pytest.mark.parametrize("hop_seconds", [0.25, 0.37, 0.1])
def test_window_starts_fall_on_the_frame_grid_and_keep_the_hop(hop_seconds: float) -> None:
    cfg = DEFAULT_MODEL  # 20 ms frame hop: 0.25 s is 12.5 frames, 0.37 s 18.5
    hop = round(hop_seconds * cfg.sample_rate)
    starts = [window_start(k, hop, cfg) for k in range(400)]
    assert all(s % cfg.hop_length == 0 for s in starts)
    assert max(abs(s - k * hop) for k, s in enumerate(starts)) <= cfg.hop_length // 2
    assert all(b > a for a, b in itertools.pairwise(starts))


def test_a_hop_of_half_frames_computes_only_the_frames_it_adds() -> None:
    """At hop 0.25 s (12.5 frame hops) a window computes 13 or 14 frames, not 26 (issue #37)."""
    cfg = DEFAULT_MODEL
    hop = cfg.sample_rate // 4
    stream = np.random.default_rng(2).normal(0, 0.1, 20 * cfg.sample_rate).astype(np.float32)
    incremental = IncrementalViews(cfg)
    windows = 0
    while (start := window_start(windows, hop, cfg)) + cfg.clip_samples <= len(stream):
        window = stream[start : start + cfg.clip_samples]
        got = incremental.view(window, start)
        assert np.abs(got - clip_view(window, 0, cfg)).max() <= 1e-6
        windows += 1
    after_first = incremental.computed - cfg.num_frames
    assert after_first / (windows - 1) <= 14


def test_paper_presets_keep_exact_hops() -> None:
    """Hops that are whole frame hops are not moved (0.25 s is 25 of the presets' 10 ms hops)."""
    for cfg in PRESETS.values():
        hop = round(0.25 * cfg.sample_rate)
        assert [window_start(k, hop, cfg) for k in range(8)] == [k * hop for k in range(8)]
