"""The Python API answers what ``POST /classify`` answers, for files, bytes and waveforms."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from arinext.model.audio_config import PRESETS
from arinext.model.manifest import ArtifactError, read_manifest
from arinext.service.errors import ApiError
from arinext.service.pipeline import Classifier, prepare_clip
from tests.service.audio import encode_av, encode_sf, signal
from tests.service.conftest import REPO

RATE = 44_100


def _without_timing(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k != "timing_ms"}


def _assert_same(api: dict, http: dict, tol: float = 1e-5) -> None:
    """Same structure, labels and order; scores within ``tol``."""
    api, http = _without_timing(api), _without_timing(http)
    assert api.keys() == http.keys()
    assert (api["duration"], api["sample_rate"], api["channels"]) == (
        http["duration"],
        http["sample_rate"],
        http["channels"],
    )
    assert len(api["predictions"]) == len(http["predictions"])
    for mine, theirs in zip(api["predictions"], http["predictions"], strict=True):
        assert mine.keys() == theirs.keys()
        for key in ("head", "model", "model_sha256"):
            assert mine[key] == theirs[key]
        rows = [(mine["top_k"], theirs["top_k"])]
        if "windows" in theirs:
            assert [(w["start"], w["end"]) for w in mine["windows"]] == [
                (w["start"], w["end"]) for w in theirs["windows"]
            ]
            pairs = zip(mine["windows"], theirs["windows"], strict=True)
            rows += [(a["top_k"], b["top_k"]) for a, b in pairs]
        for a, b in rows:
            assert [x["label"] for x in a] == [x["label"] for x in b]
            np.testing.assert_allclose([x["score"] for x in a], [x["score"] for x in b], atol=tol)


@pytest.fixture(scope="module")
def classifier(speech_artifact: Path) -> Classifier:
    return Classifier.from_artifacts([speech_artifact], intra_op_threads=1)


@pytest.mark.parametrize(
    "encode",
    [
        lambda x: encode_sf(x, RATE, "WAV", "PCM_16"),
        lambda x: encode_sf(x, RATE, "FLAC"),
        lambda x: encode_av(x, 48_000, "ogg", "libopus"),
    ],
    ids=["wav", "flac", "opus"],
)
def test_bytes_answer_like_classify(
    classifier: Classifier, speech_client: TestClient, encode
) -> None:
    data = encode(signal(3.4, RATE, channels=2, seed=5))
    mine = classifier(data, top_k=7, windows=True).model_dump(exclude_none=True)
    theirs = speech_client.post(
        "/classify",
        params={"top_k": 7, "windows": "true"},
        content=data,
        headers={"content-type": "application/octet-stream"},
    )
    assert theirs.status_code == 200, theirs.text
    _assert_same(mine, theirs.json())
    windows = mine["predictions"][0]["windows"]  # 3.4 s in 1 s views every 0.25 s
    assert [w["start"] for w in windows[:3]] == [0.0, 0.25, 0.5]
    assert windows[-1]["end"] == pytest.approx(mine["duration"], abs=1e-6)


def test_a_path_and_a_waveform_answer_like_the_bytes(classifier: Classifier, tmp_path) -> None:
    x = signal(2.2, RATE, channels=2, seed=9)
    wav = tmp_path / "clip.wav"
    wav.write_bytes(encode_sf(x, RATE, "WAV", "FLOAT"))
    from_path = classifier(wav).model_dump(exclude_none=True)
    from_str = classifier(str(wav)).model_dump(exclude_none=True)
    from_array = classifier(x, sample_rate=RATE).model_dump(exclude_none=True)
    from_mono = classifier(x.mean(axis=1), sample_rate=RATE).model_dump(exclude_none=True)
    _assert_same(from_path, from_str, tol=0)
    _assert_same(from_path, from_array, tol=1e-6)
    assert from_array["channels"] == 2 and from_mono["channels"] == 1
    np.testing.assert_allclose(
        [s["score"] for s in from_mono["predictions"][0]["top_k"]],
        [s["score"] for s in from_array["predictions"][0]["top_k"]],
        atol=1e-6,
    )


def test_hop_places_windows_every_hop_and_one_at_the_end(classifier: Classifier) -> None:
    cfg = PRESETS["speech_commands"]
    x = signal(3.0, cfg.sample_rate, seed=2)[:, 0]
    answer = classifier(x, sample_rate=cfg.sample_rate, windows=True, hop=0.5)
    spans = [(w.start, w.end) for w in answer.predictions[0].windows]
    clip = cfg.clip_samples / cfg.sample_rate
    assert [s for s, _ in spans] == [0.0, 0.5, 1.0, 1.5, round(3.0 - clip, 6)]
    assert spans[-1][1] == 3.0
    with pytest.raises(ApiError) as refused:
        classifier(x, sample_rate=cfg.sample_rate, hop=0)
    assert refused.value.status == 422


def test_clips_scored_together_equal_clips_scored_alone(classifier: Classifier) -> None:
    clips = [signal(s, 16_000, seed=i)[:, 0] for i, s in enumerate((0.4, 1.0, 5.3, 2.1))]
    alone = [
        classifier(x, sample_rate=16_000, top_k=3).model_dump(exclude_none=True) for x in clips
    ]
    prepared = [classifier.prepare(x, sample_rate=16_000) for x in clips]
    prepared = pickle.loads(pickle.dumps(prepared))  # what a worker process sends back
    together = [a.model_dump(exclude_none=True) for a in classifier.score(prepared, top_k=3)]
    for a, b in zip(alone, together, strict=True):
        _assert_same(a, b, tol=1e-6)


def test_refusals_are_the_servers(classifier: Classifier, speech_artifact: Path) -> None:
    cases = [
        (lambda: classifier(b"not audio at all"), 415, "unsupported_media_type"),
        (lambda: classifier(b""), 400, "empty_audio"),
        (lambda: classifier(np.zeros(10, np.float32)), 422, "invalid_parameter"),
        (lambda: classifier(np.zeros(16_000), sample_rate=100), 400, "invalid_audio"),
        (lambda: classifier(np.full(16_000, np.nan), sample_rate=16_000), 400, "invalid_audio"),
        (lambda: classifier(np.zeros(16_000), sample_rate=16_000, heads=["x"]), 404, None),
        (lambda: classifier(np.zeros(16_000), sample_rate=16_000, top_k=0), 422, None),
    ]
    for call, status, code in cases:
        with pytest.raises(ApiError) as refused:
            call()
        assert refused.value.status == status, refused.value.message
        assert code is None or refused.value.code == code
    short = Classifier.from_artifacts(speech_artifact, max_duration=1.0)
    with pytest.raises(ApiError) as too_long:
        short(np.zeros(32_000, np.float32), sample_rate=16_000)
    assert too_long.value.status == 413
    few = Classifier.from_artifacts(speech_artifact, max_windows=3)
    for audio in (np.zeros(64_000, np.float32), encode_sf(signal(4.0, 16_000), 16_000, "WAV")):
        with pytest.raises(ApiError) as too_many:
            few(audio, sample_rate=16_000 if isinstance(audio, np.ndarray) else None, hop=0.5)
        assert (too_many.value.status, too_many.value.code) == (413, "too_many_windows")
    with pytest.raises(ArtifactError):
        Classifier.from_artifacts([speech_artifact.parent / "missing"])


def test_prepare_clip_needs_no_classifier(speech_artifact: Path) -> None:
    cfg = PRESETS["speech_commands"]
    clip = prepare_clip(signal(1.5, 8_000, seed=1)[:, 0], [cfg], sample_rate=8_000)
    (only,) = clip.inputs
    assert only.views.shape == (3, 1, cfg.num_frames, cfg.n_mels)  # at 0, 0.25 and 0.477 s
    assert len(only.samples) == 24_000


@pytest.mark.parametrize("page", ["README.md", "docs/python.md"])
def test_the_documented_example_runs_as_written(page: str) -> None:
    text = (REPO / page).read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (example,) = [block for block in blocks if "from arinext import Classifier" in block]
    done = subprocess.run(
        [sys.executable, "-c", example],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    labels = set(read_manifest(REPO / "service" / "default_model").heads[0].labels)
    label, score = lines[0].split()
    assert label in labels and 0 < float(score) <= 1
    # tone-440hz.wav is 3 s and the model's view 1 s: a window every 0.5 s up to the end
    spans = [line.rsplit(" ", 1)[0] for line in lines[1:]]
    assert spans == ["0.00-1.00 s", "0.50-1.50 s", "1.00-2.00 s", "1.50-2.50 s", "2.00-3.00 s"]
    assert {line.rsplit(" ", 1)[1] for line in lines[1:]} <= labels
