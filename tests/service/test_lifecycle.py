"""Startup and readiness: verification, warm-up, the embedded default, and settings injection."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from arinext.model.manifest import MANIFEST_FILE, MODEL_FILE
from arinext.service import inference
from arinext.service.app import create_app
from arinext.service.dependencies import get_settings
from arinext.service.errors import ApiError
from arinext.service.inference import ModelService
from arinext.service.metrics import Metrics
from arinext.service.settings import Settings
from tests.service.audio import encode_sf, signal
from tests.service.conftest import isolated_settings, serve_in_process

WAV = {"content-type": "audio/wav"}
CLIP = encode_sf(signal(1.0, 16000), 16000, "WAV", "PCM_16")


def _wait_status(client: TestClient, status: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get("/readyz").json()
        if body["status"] == status:
            return body
        time.sleep(0.02)
    raise AssertionError(f"readyz never reported {status!r}: {client.get('/readyz').json()}")


def _copy(artifact: Path, tmp_path: Path) -> Path:
    target = tmp_path / artifact.name
    shutil.copytree(artifact, target)
    return target


def _assert_not_ready(client: TestClient) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert client.get("/healthz").status_code == 200
    refused = client.post("/classify", content=CLIP, headers=WAV)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "not_ready"
    assert int(refused.headers["retry-after"]) >= 1
    assert "arinext_ready 0.0" in client.get("/metrics").text


def test_no_models_starts_not_ready_with_a_clear_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="arinext.service")
    with serve_in_process(isolated_settings(), ready=False) as client:
        _wait_status(client, "no_models")
        _assert_not_ready(client)
    assert any("no models configured" in r.getMessage() for r in caplog.records)


def test_tampered_model_fails_verification_and_keeps_the_server_not_ready(
    speech_artifact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    artifact = _copy(speech_artifact, tmp_path)
    with (artifact / MODEL_FILE).open("ab") as fh:
        fh.write(b"\0")
    caplog.set_level(logging.ERROR, logger="arinext.service")
    with serve_in_process(isolated_settings(models=[artifact]), ready=False) as client:
        _wait_status(client, "failed")
        _assert_not_ready(client)
        assert client.get("/models").json() == {"ready": False, "heads": []}
    assert any("sha256" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: (d / MANIFEST_FILE).write_text("{not json"),
        lambda d: (d / MANIFEST_FILE).write_text('{"format_version": 99}'),
        lambda d: (d / MODEL_FILE).unlink(),
    ],
    ids=["unparsable manifest", "future format", "missing model"],
)
def test_broken_artifacts_are_refused(
    speech_artifact: Path, tmp_path: Path, damage: object, caplog: pytest.LogCaptureFixture
) -> None:
    artifact = _copy(speech_artifact, tmp_path)
    damage(artifact)  # type: ignore[operator]
    caplog.set_level(logging.ERROR, logger="arinext.service")
    with serve_in_process(isolated_settings(models=[artifact]), ready=False) as client:
        _wait_status(client, "failed")
    assert any("refusing to serve" in r.getMessage() for r in caplog.records)


def test_one_bad_artifact_among_good_ones_keeps_the_server_not_ready(
    tiny_artifacts: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "does-not-exist"
    settings = isolated_settings(models=[tiny_artifacts["nsynth"], missing])
    with serve_in_process(settings, ready=False) as client:
        _wait_status(client, "failed")


def test_the_same_head_in_two_artifacts_is_refused(speech_artifact: Path, tmp_path: Path) -> None:
    twin = _copy(speech_artifact, tmp_path)
    manifest = (twin / MANIFEST_FILE).read_text().replace('"tiny-speech-commands"', '"twin"')
    (twin / MANIFEST_FILE).write_text(manifest)
    with serve_in_process(isolated_settings(models=[speech_artifact, twin]), ready=False) as c:
        _wait_status(c, "failed")


def test_embedded_default_model_is_served_when_none_is_configured(speech_artifact: Path) -> None:
    settings = isolated_settings(default_model_dir=speech_artifact)
    with serve_in_process(settings) as client:
        assert client.get("/readyz").json() == {"status": "ready", "heads": ["speech_commands"]}


def test_readyz_is_503_while_models_load(
    speech_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real_load = inference.load_models

    def slow_load(*args: object, **kwargs: object) -> object:
        assert release.wait(30)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(inference, "load_models", slow_load)
    with serve_in_process(isolated_settings(models=[speech_artifact]), ready=False) as client:
        try:
            assert client.get("/readyz").json()["status"] == "loading"
            _assert_not_ready(client)
        finally:
            release.set()
        _wait_status(client, "ready")
        assert client.post("/classify", content=CLIP, headers=WAV).status_code == 200
        assert "arinext_ready 1.0" in client.get("/metrics").text


def test_an_execution_provider_this_build_lacks_keeps_the_server_not_ready(
    speech_artifact: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="arinext.service")
    settings = isolated_settings(
        models=[speech_artifact], providers=["NoSuchExecutionProvider", "CPUExecutionProvider"]
    )
    with serve_in_process(settings, ready=False) as client:
        _wait_status(client, "failed")
        _assert_not_ready(client)
    assert any("NoSuchExecutionProvider" in r.getMessage() for r in caplog.records)


def test_providers_come_from_the_environment(
    speech_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings().providers == ["CPUExecutionProvider"]
    monkeypatch.setenv("ARINEXT_PROVIDERS", "CPUExecutionProvider")
    settings = Settings()
    assert settings.providers == ["CPUExecutionProvider"]
    with serve_in_process(
        isolated_settings(models=[speech_artifact], providers=settings.providers)
    ) as client:
        assert client.get("/readyz").status_code == 200


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARINEXT_MODELS", " /a/one, /b/two ,")
    monkeypatch.setenv("ARINEXT_MAX_BATCH", "4")
    monkeypatch.setenv("ARINEXT_DEMO", "false")
    monkeypatch.setenv("ARINEXT_LOG_LEVEL", "WARNING")
    settings = Settings()
    assert settings.models == [Path("/a/one"), Path("/b/two")]
    assert settings.model_dirs() == [Path("/a/one"), Path("/b/two")]
    assert (settings.max_batch, settings.demo, settings.log_level) == (4, False, "warning")
    assert (settings.max_upload_bytes, settings.max_duration_seconds) == (20_000_000, 600.0)
    assert (settings.max_wait_ms, settings.queue_size, settings.intra_op_threads) == (0.0, 256, 0)


def test_settings_are_an_overridable_dependency(speech_artifact: Path) -> None:
    app = create_app(isolated_settings(models=[speech_artifact]))
    app.dependency_overrides[get_settings] = lambda: isolated_settings(max_duration_seconds=0.5)
    with TestClient(app) as client:
        _wait_status(client, "ready")
        response = client.post("/classify", content=CLIP, headers=WAV)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "audio_too_long"


def test_a_served_process_freezes_its_startup_objects_once_ready(
    server_factory: Callable, speech_artifact: Path
) -> None:
    command = [sys.executable, "-m", "arinext", "serve", "--no-demo"]
    command += ["--models", str(speech_artifact)]
    with server_factory(command, log_level="info") as server:
        log = server.log_text()
    froze = re.search(r"froze (\d+) startup objects out of the cyclic collector", log)
    assert froze is not None, log
    assert int(froze.group(1)) > 10_000  # modules, the app and its models


def test_an_in_process_app_freezes_nothing(speech_artifact: Path) -> None:
    gc.unfreeze()
    try:
        app = create_app(isolated_settings(models=[speech_artifact]))
        with TestClient(app) as client:
            _wait_status(client, "ready")
            assert gc.get_freeze_count() == 0  # test apps come and go: nothing kept forever
    finally:
        gc.unfreeze()


def test_creating_the_app_loads_nothing(speech_artifact: Path) -> None:
    app = create_app(isolated_settings(models=[speech_artifact]))
    assert app.state.models.status == "loading"
    assert not app.state.models.registry.models


def test_work_for_the_preparation_threads_after_stop_is_refused_shutting_down() -> None:
    """A job still queued when the service stops, and one that comes after, get a 503
    ``shutting_down``; the job already running finishes; the caller's own cancel stays one."""

    async def scenario() -> None:
        service = ModelService(Metrics(), retry_after=1, worker_threads=1)
        release = threading.Event()
        running = asyncio.ensure_future(service.prepare_on_workers(release.wait, 10.0))
        queued = asyncio.ensure_future(service.prepare_on_workers(int, "7"))
        await asyncio.sleep(0.05)
        cancelled = asyncio.ensure_future(service.prepare_on_workers(int, "8"))
        await asyncio.sleep(0)
        cancelled.cancel()
        await service.stop(0.0)
        release.set()
        assert await running is True
        with pytest.raises(ApiError) as queued_error:
            await queued
        with pytest.raises(ApiError) as late:
            await service.prepare_on_workers(int, "9")
        for error in (queued_error.value, late.value):
            assert (error.status, error.code) == (503, "shutting_down")
        with pytest.raises(asyncio.CancelledError):
            await cancelled

    asyncio.run(scenario())


def test_an_upload_after_the_service_stopped_is_refused_shutting_down(
    speech_artifact: Path,
) -> None:
    """Not a 500 from the released preparation threads."""
    with serve_in_process(isolated_settings(models=[speech_artifact])) as client:
        client.portal.call(client.app.state.models.stop, 0.0)
        response = client.post("/classify", content=CLIP, headers=WAV)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "shutting_down"
