"""POST /classify in-process: formats, several artifacts, long clips, and every refusal."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from arinext.model.audio_config import PRESETS
from arinext.model.labels import resolve_labels
from arinext.service.detection import DEFAULT_HOP_SECONDS
from tests.service.audio import encode_av, encode_sf, signal, silence_flac
from tests.service.conftest import isolated_settings, serve_in_process

WAV = "audio/wav"

# (id, encoder, rate, channels, content type): every accepted container and codec, 8-96 kHz,
# mono, stereo and 5.1.
FORMATS: list[tuple[str, Callable[[np.ndarray, int], bytes], int, int, str]] = [
    ("wav-u8", lambda x, r: encode_sf(x, r, "WAV", "PCM_U8"), 8000, 1, WAV),
    ("wav-s16", lambda x, r: encode_sf(x, r, "WAV", "PCM_16"), 44100, 2, WAV),
    ("wav-s24", lambda x, r: encode_sf(x, r, "WAV", "PCM_24"), 96000, 6, WAV),
    ("wav-s32", lambda x, r: encode_sf(x, r, "WAV", "PCM_32"), 22050, 2, WAV),
    ("wav-f32", lambda x, r: encode_sf(x, r, "WAV", "FLOAT"), 48000, 1, WAV),
    ("flac", lambda x, r: encode_sf(x, r, "FLAC"), 96000, 6, "audio/flac"),
    ("flac-8k", lambda x, r: encode_sf(x, r, "FLAC"), 8000, 1, "audio/flac"),
    ("ogg-vorbis", lambda x, r: encode_sf(x, r, "OGG", "VORBIS"), 44100, 2, "audio/ogg"),
    ("ogg-opus", lambda x, r: encode_av(x, r, "ogg", "libopus"), 48000, 6, "audio/ogg"),
    ("ogg-opus-16k", lambda x, r: encode_av(x, r, "ogg", "libopus"), 16000, 1, "audio/opus"),
    ("mp3-sndfile", lambda x, r: encode_sf(x, r, "MP3"), 44100, 2, "audio/mpeg"),
    ("mp3-lame", lambda x, r: encode_av(x, r, "mp3", "libmp3lame"), 8000, 1, "audio/mpeg"),
    ("m4a-aac", lambda x, r: encode_av(x, r, "ipod", "aac"), 44100, 2, "audio/mp4"),
    ("mp4-aac-5.1", lambda x, r: encode_av(x, r, "mp4", "aac"), 96000, 6, "audio/mp4"),
    ("adts-aac", lambda x, r: encode_av(x, r, "adts", "aac"), 22050, 1, "audio/aac"),
    ("webm-opus", lambda x, r: encode_av(x, r, "webm", "libopus"), 48000, 2, "audio/webm"),
    (
        "mp4-video",
        lambda x, r: encode_av(x, r, "mp4", "aac", video=True),
        44100,
        2,
        "video/mp4",
    ),
]


@pytest.mark.parametrize(
    ("encode", "rate", "channels", "content_type"),
    [f[1:] for f in FORMATS],
    ids=[f[0] for f in FORMATS],
)
def test_every_supported_format_classifies(
    speech_client: TestClient,
    encode: Callable[[np.ndarray, int], bytes],
    rate: int,
    channels: int,
    content_type: str,
) -> None:
    data = encode(signal(1.5, rate, channels), rate)
    response = speech_client.post("/classify", content=data, headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["channels"] == channels
    # Opus always decodes at 48 kHz; the other codecs keep the file's rate.
    assert body["sample_rate"] == (48000 if "opus" in content_type or rate == 48000 else rate)
    assert body["duration"] == pytest.approx(1.5, abs=0.1)  # codec priming/padding
    (prediction,) = body["predictions"]
    assert prediction["head"] == "speech_commands"
    assert len(prediction["top_k"]) == 5
    assert set(body["timing_ms"]) >= {"decode", "features", "inference", "total"}


def test_multipart_upload_and_octet_stream_give_the_same_answer(
    speech_client: TestClient,
) -> None:
    wav = encode_sf(signal(1.2, 16000), 16000, "WAV", "PCM_16")
    multipart = speech_client.post("/classify", files={"file": ("clip.bin", wav, "text/plain")})
    raw = speech_client.post(
        "/classify", content=wav, headers={"content-type": "application/octet-stream"}
    )
    assert multipart.status_code == raw.status_code == 200
    assert multipart.json()["predictions"] == raw.json()["predictions"]


@pytest.fixture(scope="module")
def multi_client(tiny_artifacts: dict[str, Path]) -> Iterator[TestClient]:
    """One app serving a tiny artifact per preset (seven heads, EPIC-100 with two)."""
    settings = isolated_settings(models=list(tiny_artifacts.values()))
    with serve_in_process(settings) as client:
        yield client


def test_several_artifacts_each_head_answers_with_its_own_labels(
    multi_client: TestClient,
) -> None:
    expected = {}
    for preset in PRESETS:
        expected.update(resolve_labels(preset))
    assert set(expected) == {
        "vggsound",
        "epic_sounds",
        "verb",
        "noun",
        "speech_commands",
        "urbansound8k",
        "nsynth",
    }
    listed = {h["head"]: h for h in multi_client.get("/models").json()["heads"]}
    assert set(listed) == set(expected)
    for head, labels in expected.items():
        assert listed[head]["labels"] == labels
    assert listed["verb"]["model"] == listed["noun"]["model"] == "tiny-epic-kitchens-100"
    assert len(listed["verb"]["labels"]) == 97 and len(listed["noun"]["labels"]) == 300
    assert listed["verb"]["frontend"]["sample_rate"] == 24000

    wav = encode_sf(signal(2.5, 44100, 2), 44100, "WAV", "PCM_16")
    body = multi_client.post("/classify?top_k=3", content=wav, headers={"content-type": WAV})
    assert body.status_code == 200, body.text
    predictions = body.json()["predictions"]
    assert [p["head"] for p in predictions] == list(listed)
    for p in predictions:
        assert p["model"] == listed[p["head"]]["model"]
        assert p["model_sha256"] == listed[p["head"]]["sha256"]
        assert len(p["top_k"]) == 3
        for item in p["top_k"]:
            assert expected[p["head"]][item["index"]] == item["label"]


def test_heads_parameter_selects_and_orders_heads(multi_client: TestClient) -> None:
    wav = encode_sf(signal(1.0, 16000), 16000, "WAV", "PCM_16")
    response = multi_client.post(
        "/classify?heads=noun,verb, urbansound8k", content=wav, headers={"content-type": WAV}
    )
    assert response.status_code == 200, response.text
    assert [p["head"] for p in response.json()["predictions"]] == ["noun", "verb", "urbansound8k"]


def test_top_k_is_capped_by_the_number_of_labels(multi_client: TestClient) -> None:
    wav = encode_sf(signal(1.0, 16000), 16000, "WAV", "PCM_16")
    response = multi_client.post(
        "/classify?heads=urbansound8k&top_k=50", content=wav, headers={"content-type": WAV}
    )
    (prediction,) = response.json()["predictions"]
    assert len(prediction["top_k"]) == 10
    assert sum(item["score"] for item in prediction["top_k"]) == pytest.approx(1.0)


def test_sixty_second_clip_gets_a_clip_answer_and_a_full_timeline(
    speech_client: TestClient,
) -> None:
    cfg = PRESETS["speech_commands"]
    wav = encode_sf(signal(60.0, 16000), 16000, "WAV", "PCM_16")
    plain = speech_client.post("/classify", content=wav, headers={"content-type": WAV})
    assert plain.status_code == 200
    assert "windows" not in plain.json()["predictions"][0]

    response = speech_client.post(
        "/classify?windows=true&top_k=35", content=wav, headers={"content-type": WAV}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["duration"] == pytest.approx(60.0)
    (prediction,) = body["predictions"]
    windows = prediction["windows"]
    n = 60 * 16000
    hop = round(DEFAULT_HOP_SECONDS * 16000)  # scanned as a live stream is
    assert len(windows) == math.ceil((n - cfg.clip_samples) / hop) + 1
    assert windows[0]["start"] == 0.0
    assert windows[-1]["end"] == pytest.approx(60.0, abs=1e-6)
    for before, after in itertools.pairwise(windows):
        assert after["start"] <= before["end"]  # no gaps
        assert after["end"] - after["start"] == pytest.approx(cfg.clip_seconds, abs=1e-4)
    # The clip-level answer is the mean of the window probabilities.
    for item in prediction["top_k"][:3]:
        per_window = [
            next(s["score"] for s in w["top_k"] if s["index"] == item["index"]) for w in windows
        ]
        assert item["score"] == pytest.approx(np.mean(per_window), abs=1e-9)


def test_short_clip_is_one_padded_window(speech_client: TestClient) -> None:
    wav = encode_sf(signal(0.3, 16000), 16000, "WAV", "PCM_16")
    response = speech_client.post("/classify?windows=1", content=wav, headers={"content-type": WAV})
    (window,) = response.json()["predictions"][0]["windows"]
    assert window["start"] == 0.0 and window["end"] == pytest.approx(0.3)


# --- refusals -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_client(speech_artifact: Path) -> Iterator[TestClient]:
    """Small limits, so over-limit inputs stay small."""
    settings = isolated_settings(
        models=[speech_artifact], max_upload_bytes=200_000, max_duration_seconds=5.0
    )
    with serve_in_process(settings) as client:
        yield client


def _float_wav_with(value: float) -> bytes:
    x = signal(1.0, 16000)
    x[123, 0] = value
    return encode_sf(x, 16000, "WAV", "FLOAT")


GOOD = encode_sf(signal(1.0, 16000), 16000, "WAV", "PCM_16")


def _raw(data: bytes, content_type: str = WAV) -> dict:
    return {"content": data, "headers": {"content-type": content_type}}


# (id, query, request arguments (built lazily: some are costly), status, code)
REFUSALS: list[tuple[str, str, Callable[[], dict], int, str]] = [
    ("empty body", "", lambda: _raw(b""), 400, "empty_audio"),
    ("non-audio bytes", "", lambda: _raw(b"<html>no</html>"), 415, "unsupported_media_type"),
    ("truncated wav", "", lambda: _raw(GOOD[: len(GOOD) // 3]), 400, "invalid_audio"),
    (
        "wrong form field",
        "",
        lambda: {"files": {"audio": ("a.wav", GOOD, WAV)}},
        422,
        "missing_file",
    ),
    (
        "file field is text",
        "",
        lambda: {"data": {"file": "text"}, "files": {"other": ("o.txt", b"x", "text/plain")}},
        422,
        "missing_file",
    ),
    ("url-encoded form", "", lambda: {"data": {"file": "x"}}, 415, "unsupported_media_type"),
    (
        "malformed multipart",
        "",
        lambda: _raw(b"--x\r\ngarbage", "multipart/form-data"),
        400,
        "invalid_multipart",
    ),
    ("json body", "", lambda: {"json": {"url": "http://h/a.wav"}}, 415, "unsupported_media_type"),
    ("no content type", "", lambda: _raw(GOOD, ""), 415, "unsupported_media_type"),
    ("unknown head", "?heads=nope", lambda: _raw(GOOD), 404, "unknown_head"),
    ("top_k zero", "?top_k=0", lambda: _raw(GOOD), 422, "invalid_parameter"),
    ("top_k too big", "?top_k=51", lambda: _raw(GOOD), 422, "invalid_parameter"),
    ("top_k not a number", "?top_k=five", lambda: _raw(GOOD), 422, "invalid_parameter"),
    ("windows not a bool", "?windows=maybe", lambda: _raw(GOOD), 422, "invalid_parameter"),
    ("upload over the limit", "", lambda: _raw(bytes(250_000)), 413, "upload_too_large"),
    (
        "multipart over the limit",
        "",
        lambda: {"files": {"file": ("big.wav", bytes(250_000), WAV)}},
        413,
        "upload_too_large",
    ),
    (
        "duration over the limit",
        "",
        lambda: _raw(encode_sf(signal(6.0, 8000), 8000, "WAV", "PCM_16")),
        413,
        "audio_too_long",
    ),
    (
        "tiny file decoding to hours",
        "",
        lambda: _raw(silence_flac(2 * 3600), "audio/flac"),  # ~180 KB
        413,
        "audio_too_long",
    ),
    ("NaN samples", "", lambda: _raw(_float_wav_with(np.nan)), 400, "invalid_audio"),
    ("Inf samples", "", lambda: _raw(_float_wav_with(np.inf)), 400, "invalid_audio"),
    (
        "huge finite samples",
        "",
        lambda: _raw(encode_sf(signal(1.0, 16000) * 3e37, 16000, "WAV", "FLOAT")),
        400,
        "invalid_audio",
    ),
]


@pytest.mark.parametrize(
    ("query", "make_request", "status", "code"),
    [r[1:] for r in REFUSALS],
    ids=[r[0] for r in REFUSALS],
)
def test_bad_input_gets_its_status_and_json_error_and_the_server_keeps_answering(
    limited_client: TestClient,
    query: str,
    make_request: Callable[[], dict],
    status: int,
    code: str,
) -> None:
    response = limited_client.post(f"/classify{query}", **make_request())
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    follow_up = limited_client.post("/classify", **_raw(GOOD))
    assert follow_up.status_code == 200


def test_unknown_route_and_method_use_the_error_shape(speech_client: TestClient) -> None:
    assert speech_client.get("/nope").json()["error"]["code"] == "not_found"
    response = speech_client.get("/classify")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_docs_and_openapi_describe_the_upload(speech_client: TestClient) -> None:
    assert speech_client.get("/docs").status_code == 200
    spec = speech_client.get("/openapi.json").json()
    body = spec["paths"]["/classify"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "audio/*", "video/*", "application/octet-stream"} <= set(body)
