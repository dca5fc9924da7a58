"""``POST /classify`` skips FastAPI's per-request solving and answers exactly as if it had not."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from arinext.service.dependencies import get_settings
from tests.service.audio import encode_sf, signal

CLIP = encode_sf(signal(1.0, 16000), 16000, "WAV", "PCM_16")

QUERIES = [
    "",
    "?top_k=3",
    "?top_k=3&top_k=2",  # the last of repeated keys wins
    "?windows=yes&hop=0.25",
    "?windows=1&heads=speech_commands",
    "?heads=%20speech_commands%20,,",
    "?unknown=1&top_k=1",  # unknown parameters are ignored
    "?top_k=0",
    "?top_k=51",
    "?top_k=five",
    "?top_k=2.5",
    "?windows=maybe",
    "?hop=0",
    "?hop=-1",
    "?hop=3601",
    "?hop=nan",
    "?top_k=0&hop=0",  # every error is reported
    "?heads=nope",
]


def _answer(client: TestClient, query: str) -> tuple[int, Any]:
    response = client.post(f"/classify{query}", content=CLIP, headers={"content-type": "audio/wav"})
    body = response.json()
    body.pop("timing_ms", None)
    return response.status_code, body


@pytest.mark.parametrize("query", QUERIES)
def test_lean_path_answers_like_fastapis_own_handler(speech_client: TestClient, query: str) -> None:
    lean = _answer(speech_client, query)
    app = speech_client.app
    app.dependency_overrides[get_settings] = lambda: app.state.settings  # FastAPI's handler
    try:
        solved = _answer(speech_client, query)
    finally:
        app.dependency_overrides.clear()
    assert lean == solved
    assert lean[0] in (200, 404, 422)


def test_lean_path_does_not_solve_dependencies(
    speech_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("FastAPI solved the dependencies of /classify")

    monkeypatch.setattr("fastapi.routing.solve_dependencies", refuse)
    assert _answer(speech_client, "?top_k=2")[0] == 200
    assert speech_client.get("/readyz").status_code == 500  # the patch does take effect there
