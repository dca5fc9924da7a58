"""SpecAugment: the reference's order and sizes, masked with the spectrogram's mean."""

from __future__ import annotations

import numpy as np

from arinext.training.augment import spec_augment, time_warp
from arinext.training.config import AugmentConfig


def test_masks_use_the_mean_and_stay_within_bounds() -> None:
    rng = np.random.default_rng(0)
    spec = rng.normal(-5, 2, (100, 128)).astype(np.float32)
    cfg = AugmentConfig(time_warp=0)
    for seed in range(20):
        out = spec_augment(spec, cfg, np.random.default_rng(seed))
        assert out.shape == spec.shape and out.dtype == spec.dtype
        changed = out != spec
        mean = np.float32(spec.mean())
        assert np.all(out[changed] == mean)
        # At most 2 x 27 mel bins fully masked, and at most 2 x 25 frames.
        assert np.all(changed.all(axis=0).sum() <= 2 * 27)
        assert np.all(changed.all(axis=1).sum() <= 2 * 25)
    assert not np.shares_memory(out, spec)


def test_time_warp_keeps_ends_and_is_a_reparameterised_time_axis() -> None:
    ramp = np.repeat(np.arange(60, dtype=np.float32)[:, None], 4, axis=1)
    for seed in range(10):
        warped = time_warp(ramp, 5, np.random.default_rng(seed))
        assert warped[0, 0] == 0 and warped[-1, 0] == 59
        assert np.all(np.diff(warped[:, 0]) > 0)  # monotonic: frames are moved, not shuffled
        assert np.max(np.abs(warped[:, 0] - ramp[:, 0])) <= 5 + 1e-4


def test_a_constant_spectrogram_survives_a_time_warp() -> None:
    spec = np.zeros((10, 8), dtype=np.float32)
    cfg = AugmentConfig(time_warp=5, freq_masks=0, time_masks=0)
    np.testing.assert_array_equal(spec_augment(spec, cfg, np.random.default_rng(0)), spec)
