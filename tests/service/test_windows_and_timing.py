"""``hop=`` scans a recording with overlapping windows (counted by admission), and ``timing_ms``
stages add up to no more than ``total`` however the work was split or shared."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from arinext.model.audio_config import PRESETS
from tests.service import audio
from tests.service.conftest import isolated_settings, serve_in_process

WAV = {"content-type": "audio/wav"}
STAGES = ("decode", "resample", "features", "queue", "inference")


@pytest.fixture(scope="module")
def client(tiny_artifacts: dict[str, Path]) -> Iterator[TestClient]:
    models = [tiny_artifacts["speech_commands"], tiny_artifacts["vggsound"]]
    with serve_in_process(isolated_settings(models=models, max_windows=200)) as client:
        yield client


def _clip(seconds: float, rate: int = 16000) -> bytes:
    return audio.encode_sf(audio.signal(seconds, rate), rate, "WAV", "PCM_16")


def test_hop_scans_with_overlapping_windows_and_shows_each_one(client: TestClient) -> None:
    response = client.post(
        "/classify?heads=speech_commands&hop=0.25&windows=true&top_k=2",
        content=_clip(3.0),
        headers=WAV,
    )
    assert response.status_code == 200, response.text
    windows = response.json()["predictions"][0]["windows"]
    view = PRESETS["speech_commands"].clip_seconds
    starts = [w["start"] for w in windows]
    assert starts[:8] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    assert windows[-1]["end"] == pytest.approx(3.0)  # the last window reaches the end
    assert all(w["end"] - w["start"] == pytest.approx(view, abs=1e-4) for w in windows)
    assert all(len(w["top_k"]) == 2 for w in windows)
    assert len(windows) == 9  # starts every 0.25 s up to 1.75, then one ending at 3.0


def test_without_hop_a_long_clip_is_scanned_as_a_stream_is(client: TestClient) -> None:
    default = client.post(
        "/classify?heads=speech_commands&windows=true", content=_clip(3.0), headers=WAV
    ).json()["predictions"][0]
    scanned = client.post(
        "/classify?heads=speech_commands&windows=true&hop=0.25", content=_clip(3.0), headers=WAV
    ).json()["predictions"][0]
    assert default["windows"] == scanned["windows"] and len(default["windows"]) == 9
    assert default["top_k"] == scanned["top_k"]
    one = client.post("/classify?windows=true", content=_clip(0.5), headers=WAV).json()
    assert len(one["predictions"][0]["windows"]) == 1  # a clip within one view: one window


def test_windows_a_hop_would_need_count_against_the_per_request_cap(client: TestClient) -> None:
    response = client.post(
        "/classify?heads=speech_commands&hop=0.005", content=_clip(3.0), headers=WAV
    )
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "too_many_windows" and "over the limit of 200" in error["message"]
    assert client.post("/classify?hop=0", content=_clip(1.0), headers=WAV).status_code == 422


@pytest.mark.parametrize(
    ("query", "seconds"),
    [
        ("heads=speech_commands", 1.0),  # one window: one urgent submission
        ("heads=speech_commands", 40.0),  # a long clip: bulk chunks
        ("hop=1", 12.0),  # two models at once (12 windows each), sharing the request's time
    ],
)
def test_timing_stages_add_up_to_no_more_than_total(
    client: TestClient, query: str, seconds: float
) -> None:
    response = client.post(f"/classify?{query}", content=_clip(seconds, 22050), headers=WAV)
    assert response.status_code == 200, response.text
    timing = response.json()["timing_ms"]
    assert set(timing) == {*STAGES, "total"}
    assert all(timing[stage] >= 0 for stage in STAGES)
    assert sum(timing[stage] for stage in STAGES) <= timing["total"] + 0.01  # rounding
    assert timing["resample"] > 0 and timing["inference"] > 0
