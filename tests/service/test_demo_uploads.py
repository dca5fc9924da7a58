"""The demo's upload route is no side door: audio only, one file, our limit, bounded disk."""

from __future__ import annotations

import io
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from arinext.service import demo_uploads
from tests.service import audio
from tests.service.conftest import ServerProcess, isolated_settings, run_server, serve_in_process

UPLOAD = "/demo/gradio_api/upload"
MB = 1 << 20


@pytest.fixture(scope="module")
def demo_server(
    tmp_path_factory: pytest.TempPathFactory, speech_artifact: Path
) -> Iterator[ServerProcess]:
    """A real server with the demo mounted and default limits."""
    with run_server(
        tmp_path_factory.mktemp("demo-uploads"), models=speech_artifact, demo="true"
    ) as server:
        yield server


def _wav(megabytes: int, seed: int) -> bytes:
    """A WAV of noise of about ``megabytes`` MB (different bytes for each seed)."""
    samples = np.random.default_rng(seed).integers(-3000, 3000, megabytes * MB // 2, np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, samples, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _stored_bytes(pid: int) -> int:
    directory = Path(tempfile.gettempdir()) / f"arinext-demo-uploads-{pid}"
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def test_many_large_uploads_leave_bounded_temp_space_and_classify_keeps_working(
    demo_server: ServerProcess,
) -> None:
    with httpx.Client(base_url=demo_server.url, timeout=120) as client:
        for seed in range(20):
            files = {"files": (f"clip{seed}.wav", _wav(18, seed), "audio/wav")}
            response = client.post(UPLOAD, files=files)
            assert response.status_code == 200, response.text
            assert len(response.json()) == 1
        assert _stored_bytes(demo_server.process.pid) < 25_000_000
        one_second = audio.encode_sf(audio.signal(1.0, 16000), 16000, "WAV", "PCM_16")
        multipart = client.post("/classify", files={"file": ("a.wav", one_second, "audio/wav")})
        assert multipart.status_code == 200
        assert client.get("/readyz").status_code == 200


def test_only_one_audio_file_within_the_limit_is_taken(demo_server: ServerProcess) -> None:
    pid = demo_server.process.pid
    clip = audio.encode_sf(audio.signal(0.5, 16000), 16000, "WAV", "PCM_16")
    with httpx.Client(base_url=demo_server.url, timeout=120) as client:
        before = _stored_bytes(pid)
        text = client.post(UPLOAD, files={"files": ("notes.txt", b"hello " * 1000, "text/plain")})
        assert text.status_code == 415
        assert text.json()["error"]["code"] == "unsupported_media_type"
        two = client.post(UPLOAD, files=[("files", ("a.wav", clip)), ("files", ("b.wav", clip))])
        assert two.status_code == 400
        assert two.json()["error"]["code"] == "one_file_only"
        assert _stored_bytes(pid) == before  # refused uploads are deleted at once
        large = client.post(UPLOAD, files={"files": ("big.wav", _wav(21, 0), "audio/wav")})
        assert large.status_code == 413
        assert large.json()["error"]["code"] == "upload_too_large"


def test_a_used_upload_is_released_and_nothing_outside_the_upload_dir_is_touched(
    tmp_path: Path,
) -> None:
    directory = demo_uploads.prepare_upload_dir()
    used = directory / "abc123" / "clip.wav"
    used.parent.mkdir()
    used.write_bytes(b"RIFF")
    example = tmp_path / "example.wav"
    example.write_bytes(b"RIFF")
    demo_uploads.release(used)
    demo_uploads.release(example)
    assert not used.exists() and not used.parent.exists()
    assert example.exists()
    demo_uploads.remove_upload_dir()
    assert not directory.exists()


def test_readyz_is_503_when_the_temp_space_is_nearly_full(speech_artifact: Path) -> None:
    free = shutil.disk_usage(tempfile.gettempdir()).free
    settings = isolated_settings(models=[speech_artifact], max_upload_bytes=free)
    with serve_in_process(settings, ready=False) as client:
        deadline = time.monotonic() + 60
        while (readiness := client.get("/readyz")).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert readiness.status_code == 503
        assert readiness.json()["status"] == "low_temp_space"
