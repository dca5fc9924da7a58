"""The model repository extension (``/v2/repository``) against a real server process.

One server per module (per xdist worker), started with the tiny urbansound8k model; its
repository holds copies of other tiny artifacts. Each test loads what it needs, so the tests do
not depend on their order.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydantic import ValidationError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from arinext.model.audio_config import PRESETS
from arinext.model.labels import resolve_labels
from arinext.model.manifest import MODEL_FILE
from arinext.service.errors import ApiError
from arinext.service.inference import ModelService
from arinext.service.loading import load_model
from arinext.service.metrics import Metrics
from tests.service.artifacts import make_tiny_artifact
from tests.service.audio import encode_sf, signal
from tests.service.conftest import ServerProcess, isolated_settings, run_server

TOKEN = "repository-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEECH = "tiny-speech-commands"  # loaded from the repository
NSYNTH = "tiny-nsynth"
STARTUP = "tiny-urbansound8k"  # served from ARINEXT_MODELS
RATE = 16_000
WAV = encode_sf(signal(1.2, RATE), RATE, "WAV", "PCM_16")
WAV_TYPE = {"content-type": "audio/wav"}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, tiny_artifacts: dict[str, Path]) -> Path:
    root = tmp_path_factory.mktemp("repository") / "models"
    root.mkdir()
    shutil.copytree(tiny_artifacts["speech_commands"], root / SPEECH)
    shutil.copytree(tiny_artifacts["nsynth"], root / NSYNTH)
    tampered = root / "tiny-epic-sounds"
    shutil.copytree(tiny_artifacts["epic_sounds"], tampered)
    data = bytearray((tampered / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (tampered / MODEL_FILE).write_bytes(bytes(data))
    shutil.copytree(tiny_artifacts["nsynth"], root / "renamed")  # its manifest says tiny-nsynth
    make_tiny_artifact(  # a head the startup model already serves
        root / "clash",
        name="clash",
        frontend=PRESETS["urbansound8k"],
        labels=resolve_labels("urbansound8k"),
    )
    outside = root.parent / "outside"
    shutil.copytree(tiny_artifacts["vggsound"], outside / "tiny-vggsound")
    (root / "tiny-vggsound").symlink_to(outside / "tiny-vggsound")
    linked = root / "linked"
    linked.mkdir()
    shutil.copy(outside / "tiny-vggsound" / "manifest.json", linked)
    (linked / MODEL_FILE).symlink_to(outside / "tiny-vggsound" / MODEL_FILE)
    return root


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_artifacts: dict[str, Path], repository: Path
) -> Iterator[ServerProcess]:
    with run_server(
        tmp_path_factory.mktemp("repository-server"),
        models=tiny_artifacts["urbansound8k"],
        model_repository=repository,
        repository_token=TOKEN,
    ) as server:
        yield server


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def _load(http: httpx.Client, name: str) -> httpx.Response:
    return http.post(f"/v2/repository/models/{name}/load", headers=AUTH)


def _unload(http: httpx.Client, name: str) -> httpx.Response:
    return http.post(f"/v2/repository/models/{name}/unload", headers=AUTH)


def _index(http: httpx.Client) -> dict[str, dict]:
    answer = http.post("/v2/repository/index", headers=AUTH)
    assert answer.status_code == 200, answer.text
    return {entry["name"]: entry for entry in answer.json()}


def _stream(server: ServerProcess) -> str:
    return server.url.replace("http://", "ws://") + "/stream"


def _pcm(seconds: float) -> bytes:
    return (signal(seconds, RATE)[:, 0] * 32767).astype("<i2").tobytes()


def _start(**fields: object) -> str:
    return json.dumps({"type": "start", "format": "s16le", "sample_rate": RATE, **fields})


def test_a_loaded_model_answers_on_every_route_without_a_restart(
    server: ServerProcess, http: httpx.Client
) -> None:
    assert "model_repository" in http.get("/v2").json()["extensions"]
    assert "/v2/repository/index" in http.get("/openapi.json").json()["paths"]
    loaded = _load(http, SPEECH)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["state"] == "READY"
    assert _index(http)[SPEECH]["state"] == "READY"
    assert _index(http)[STARTUP]["state"] == "READY"  # served from ARINEXT_MODELS

    heads = {h["head"]: h["model"] for h in http.get("/models").json()["heads"]}
    assert heads == {"urbansound8k": STARTUP, "speech_commands": SPEECH}
    answer = http.post("/classify?heads=speech_commands", content=WAV, headers=WAV_TYPE)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["model"] == SPEECH

    assert http.get(f"/v2/models/{SPEECH}").json()["outputs"][0]["name"] == "speech_commands"
    assert http.get(f"/v2/models/{SPEECH}/ready").status_code == 200
    request = {
        "inputs": [
            {
                "name": "audio",
                "shape": [1],
                "datatype": "BYTES",
                "data": [base64.b64encode(WAV).decode()],
            }
        ]
    }
    inferred = http.post(f"/v2/models/{SPEECH}/infer", json=request)
    assert inferred.status_code == 200, inferred.text
    probs = np.array(inferred.json()["outputs"][0]["data"])
    assert probs.shape == (35,) and abs(probs.sum() - 1) < 1e-4

    with connect(_stream(server)) as ws:
        ws.send(_start(heads=["speech_commands"]))
        ready = json.loads(ws.recv(timeout=10))
        assert [m["name"] for m in ready["models"]] == [SPEECH]
        ws.send(_pcm(1.2))
        ws.send(json.dumps({"type": "end"}))
        events = []
        while (event := json.loads(ws.recv(timeout=30)))["type"] != "end":
            events.append(event)
    assert [e["type"] for e in events if e["type"] == "window"]

    metrics = http.get("/metrics").text
    assert f'arinext_model_info{{head="speech_commands",model="{SPEECH}"' in metrics


def test_unloaded_models_are_gone_and_a_load_storm_is_serialised(http: httpx.Client) -> None:
    answers: list[int] = []

    def load() -> None:
        answers.append(_load(http, NSYNTH).status_code)

    storm = [threading.Thread(target=load) for _ in range(10)]
    for thread in storm:
        thread.start()
    for thread in storm:
        thread.join()
    assert set(answers) <= {200, 503} and 200 in answers, answers
    assert http.get(f"/v2/models/{NSYNTH}/ready").status_code == 200

    assert _unload(http, NSYNTH).status_code == 200
    assert http.get(f"/v2/models/{NSYNTH}").status_code == 404
    refused = http.post(f"/v2/models/{NSYNTH}/infer", json={"inputs": []})
    assert refused.status_code == 404 and "error" in refused.json()
    assert http.post("/classify?heads=nsynth", content=WAV, headers=WAV_TYPE).status_code == 404
    assert _index(http)[NSYNTH] == {
        "name": NSYNTH,
        "version": "1",
        "state": "UNAVAILABLE",
        "reason": "unloaded",
    }
    # Its info and queue depth go (the depth once its batcher has closed); batch sizes stay.
    deadline = time.monotonic() + 5
    while f'arinext_queue_depth{{model="{NSYNTH}"}}' in http.get("/metrics").text:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert f'model="{NSYNTH}",sha256' not in http.get("/metrics").text
    assert _unload(http, NSYNTH).status_code == 404
    assert http.post("/classify", content=WAV, headers=WAV_TYPE).is_success


def test_a_stream_ends_cleanly_when_its_model_is_unloaded(
    server: ServerProcess, http: httpx.Client
) -> None:
    assert _load(http, SPEECH).status_code == 200
    with connect(_stream(server)) as ws:
        ws.send(_start(heads=["speech_commands"]))
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        ws.send(_pcm(1.1))
        while json.loads(ws.recv(timeout=10))["type"] != "window":
            pass
        assert _unload(http, SPEECH).status_code == 200
        ws.send(_pcm(0.5))
        events = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                events.append(json.loads(ws.recv(timeout=10)))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert closed.value.rcvd.reason.startswith("model_unloaded")
    assert events[-1]["error"]["code"] == "model_unloaded"


def test_tampered_and_foreign_artifacts_are_refused_and_the_server_serves_on(
    http: httpx.Client,
) -> None:
    before = http.get("/models").json()["heads"]
    tampered = _load(http, "tiny-epic-sounds")
    assert tampered.status_code == 400
    assert "sha256" in tampered.json()["error"] and "does not match" in tampered.json()["error"]
    assert "sha256" in _index(http)["tiny-epic-sounds"]["reason"]
    cases = {
        "renamed": (400, "name the folder after the model"),
        "clash": (400, "urbansound8k"),
        "tiny-vggsound": (404, "no model"),  # a link out of the repository
        "linked": (400, "outside the repository"),
        "missing": (404, "no model"),
        ".hidden": (400, "model name"),
        "x" * 65: (400, "model name"),
        "%2e%2e": (400, "model name"),
    }
    for name, (status, text) in cases.items():
        answer = _load(http, name)
        assert answer.status_code == status, (name, answer.text)
        assert text in answer.json()["error"], (name, answer.text)
    assert http.get("/models").json()["heads"] == before
    assert http.post("/classify", content=WAV, headers=WAV_TYPE).is_success


def test_the_token_is_required(http: httpx.Client) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-of-the-same-size-012345"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ):
        for path in ("/v2/repository/index", f"/v2/repository/models/{SPEECH}/load"):
            answer = http.post(path, headers=headers)
            assert answer.status_code == 401, (headers, answer.text)
            assert answer.headers["www-authenticate"].startswith("Bearer")
    assert http.post("/v2/repository/index", headers=AUTH, json={"ready": True}).is_success
    bad = http.post(
        f"/v2/repository/models/{NSYNTH}/load",
        headers=AUTH,
        json={"parameters": {"file:1/model.onnx": "AAAA"}},
    )
    assert bad.status_code == 400 and "not supported" in bad.json()["error"]


def test_the_last_model_stays(http: httpx.Client) -> None:
    for name, entry in _index(http).items():
        if entry["state"] == "READY" and name != STARTUP:
            assert _unload(http, name).status_code == 200
    last = _unload(http, STARTUP)
    assert last.status_code == 409 and "last" in last.json()["error"]
    assert http.get("/readyz").status_code == 200


def test_off_by_default(speech_client) -> None:
    assert "model_repository" not in speech_client.get("/v2").json()["extensions"]
    answer = speech_client.post("/v2/repository/index", headers=AUTH)
    assert answer.status_code == 404 and "error" in answer.json()
    assert not any(
        p.startswith("/v2/repository") for p in speech_client.get("/openapi.json").json()["paths"]
    )


def test_a_repository_needs_a_long_token_and_a_directory(tmp_path: Path) -> None:
    for overrides in (
        {"model_repository": tmp_path},
        {"model_repository": tmp_path, "repository_token": "short"},
        {"model_repository": tmp_path / "missing", "repository_token": TOKEN},
    ):
        with pytest.raises(ValidationError, match="ARINEXT_"):
            isolated_settings(**overrides)


def test_requests_admitted_before_an_unload_finish_on_the_old_model(
    tiny_artifacts: dict[str, Path],
) -> None:
    settings = isolated_settings()
    speech, nsynth = (
        load_model(tiny_artifacts[p], intra_op_threads=1, backend=settings.backend)
        for p in ("speech_commands", "nsynth")
    )
    cfg = speech.manifest.frontend
    views = np.zeros((1, 1, cfg.num_frames, cfg.n_mels), np.float32)

    async def scenario() -> None:
        service = ModelService(Metrics(), retry_after=1, worker_threads=1)
        service.put(speech, settings)
        service.put(nsynth, settings)
        old = service.batcher_for(speech)
        admission = old.admit()
        service.remove(speech.name)
        for refused in (lambda: service.batcher_for(speech), old.admit):
            with pytest.raises(ApiError) as gone:
                refused()
            assert (gone.value.status, gone.value.code) == (404, "model_unloaded")
        async with admission:  # admitted before: runs on the unloaded model
            result = await admission.run(views)
        assert result.logits["speech_commands"].shape == (1, 35)
        await service.stop(5)

    asyncio.run(scenario())
