"""The prediction pipeline: window layout, and scores equal to the front-end + ONNX Runtime."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from arinext.model.audio_config import PRESETS
from arinext.model.frontend import clip_view
from arinext.model.manifest import MODEL_FILE, read_manifest
from arinext.service.detection import DEFAULT_HOP_SECONDS
from arinext.service.predict import window_starts
from arinext.service.prepare import features
from tests.service.audio import encode_sf, signal


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("seconds", [0.2, 1.0, 2.08, 2.5, 5.119, 13.7, 60.0])
def test_windows_scan_the_clip_every_default_hop_to_its_end(preset: str, seconds: float) -> None:
    cfg = PRESETS[preset]
    n = round(seconds * cfg.sample_rate)
    starts = window_starts(n, cfg)
    clip = cfg.clip_samples
    if n <= clip:
        assert starts == [0]
        return
    hop = round(DEFAULT_HOP_SECONDS * cfg.sample_rate)
    assert starts[0] == 0
    assert starts[-1] + clip == n  # the last view ends at the end of the clip
    assert len(starts) == math.ceil((n - clip) / hop) + 1
    assert all(0 < b - a <= hop for a, b in itertools.pairwise(starts))


def _reference(artifact: Path, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-window softmax and their mean, computed without the service."""
    manifest = read_manifest(artifact)
    cfg = manifest.frontend
    session = ort.InferenceSession(str(artifact / MODEL_FILE), providers=["CPUExecutionProvider"])
    views = np.stack([clip_view(samples, s, cfg) for s in window_starts(len(samples), cfg)])
    (logits,) = session.run([manifest.heads[0].output], {"logmel": views[:, None]})
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return probs, probs.mean(axis=0)


def _scores(items: list[dict], size: int) -> np.ndarray:
    out = np.full(size, np.nan)
    for item in items:
        out[item["index"]] = item["score"]
    return out


def test_scores_equal_frontend_plus_onnx_runtime(
    speech_client: TestClient, speech_artifact: Path
) -> None:
    x = signal(3.3, 16000, seed=7)[:, 0]
    response = speech_client.post(
        "/classify?top_k=35&windows=true",
        content=encode_sf(x, 16000, "WAV", "FLOAT"),
        headers={"content-type": "audio/wav"},
    )
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    per_window, clip = _reference(speech_artifact, x)
    np.testing.assert_allclose(_scores(prediction["top_k"], 35), clip, atol=1e-6)
    assert len(prediction["windows"]) == len(per_window)
    for window, expected in zip(prediction["windows"], per_window, strict=True):
        np.testing.assert_allclose(_scores(window["top_k"], 35), expected, atol=1e-6)


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("hop", [0.25, 0.37])
def test_a_long_clips_windows_share_frames_and_equal_whole_windows(preset: str, hop: float) -> None:
    """`features` computes each frame of overlapping windows once (as a stream does), and gives
    exactly the views of each window computed whole."""
    cfg = PRESETS[preset]
    samples = signal(3.3 * cfg.clip_samples / cfg.sample_rate, cfg.sample_rate)[:, 0]
    starts = window_starts(len(samples), cfg, hop)
    whole = np.stack([clip_view(samples, s, cfg) for s in starts])[:, None]
    np.testing.assert_array_equal(features(samples, starts, cfg), whole)
