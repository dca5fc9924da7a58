"""A full temp directory is a retryable 507, never a 500 (issue 38, item 7), on a real server.

The server runs in a mount namespace of its own whose ``TMPDIR`` is a small tmpfs, filled to the
last byte once the server is up (through ``/proc/PID/root``: nothing outside the server process
sees the mount), so the multipart uploads Starlette and Gradio spool to disk hit ENOSPC. (Filled
before the start, Python's ``tempfile`` would not pick it: it probes the directory by writing.)
It needs ``unshare`` and the right to mount (root, or unprivileged user namespaces); elsewhere
the tests skip and say so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from arinext.service.errors import insufficient_storage
from tests.service import audio
from tests.service.conftest import ServerProcess, run_server

# Mount a small tmpfs on $0, make it TMPDIR and run the rest of the arguments.
_SMALL_TMPDIR = (
    'mount -t tmpfs -o size=256k,mode=1777 tmpfs "$0" || exit 97; '
    'TMPDIR="$0"; export TMPDIR; exec "$@"'
)
RATE = 16000


def _in_small_tmpdir(directory: Path, command: list[str]) -> list[str]:
    """``command`` run with ``TMPDIR`` a small tmpfs mounted in a private mount namespace."""
    unshare = ["unshare", "--mount"]
    if os.geteuid() != 0:
        unshare.append("--map-root-user")
    return [*unshare, "sh", "-c", _SMALL_TMPDIR, str(directory), *command]


def _cannot_mount(directory: Path) -> str | None:
    """Why a full tmpfs cannot be made here, or None when it can."""
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux)"
    probe = subprocess.run(
        _in_small_tmpdir(directory, ["true"]), capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        return f"cannot mount a tmpfs in a mount namespace: {probe.stderr.strip()}"
    return None


@pytest.fixture
def full_tmpdir(tmp_path: Path) -> Path:
    """A mount point for the server's full tmpfs; skips where none can be mounted."""
    directory = tmp_path / "full-tmp"
    directory.mkdir()
    reason = _cannot_mount(directory)
    if reason is not None:
        pytest.skip(reason)
    return directory


@contextlib.contextmanager
def _serve(
    tmp_path: Path, mount: Path, artifact: Path, *extra: str, **settings: object
) -> Iterator[ServerProcess]:
    """``arinext serve`` whose temp directory is full once its models are loaded."""
    command = [sys.executable, "-m", "arinext", "serve", "--models", str(artifact), *extra]
    # /readyz says low_temp_space on this server: up is /healthz, then the models' readiness.
    with run_server(tmp_path, _in_small_tmpdir(mount, command), ready=False, **settings) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            _wait_loaded(client)
        _fill(Path(f"/proc/{server.process.pid}/root") / mount.relative_to("/"))
        yield server


def _fill(directory: Path) -> None:
    """Write zeros into ``directory`` until its file system is full."""
    chunk = bytes(16 << 10)
    with pytest.raises(OSError) as full, (directory / "fill").open("wb", buffering=0) as sink:
        for _ in range(1 << 16):
            sink.write(chunk)
    assert full.value.errno == errno.ENOSPC, full.value


def _wait_loaded(client: httpx.Client, timeout: float = 180.0) -> None:
    """Until the models are loaded: /readyz then refuses only for the temp space."""
    deadline = time.monotonic() + timeout
    while (ready := client.get("/readyz")).json()["status"] != "low_temp_space":
        assert ready.json()["status"] == "loading", ready.text
        assert time.monotonic() < deadline, ready.text
        time.sleep(0.1)
    assert ready.status_code == 503


def _wav(seconds: float) -> bytes:
    return audio.encode_sf(audio.signal(seconds, RATE), RATE, "WAV", "PCM_16")


def _assert_no_server_error(server: ServerProcess) -> None:
    log = server.log_text()
    assert "Traceback" not in log and "unhandled error" not in log, log


def test_multipart_classify_into_a_full_temp_dir_is_a_retryable_507(
    tmp_path: Path, full_tmpdir: Path, speech_artifact: Path
) -> None:
    """A multipart file over Starlette's 1 MiB spool size: 507 ``insufficient_storage`` with
    ``Retry-After``; the rest of the body is read, so the client reads the answer on the same
    connection; what fits in memory and raw bodies are still classified."""
    big = _wav(40.0)  # 1.28 MB: rolls over to the temp file
    small = _wav(1.0)
    with (
        _serve(tmp_path, full_tmpdir, speech_artifact, "--no-demo", log_level="info") as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        for _ in range(3):  # not a one-off: the server stays in the same state
            full = client.post("/classify", files={"file": ("big.wav", big, "audio/wav")})
            assert full.status_code == 507, full.text
            assert full.json()["error"]["code"] == "insufficient_storage"
            assert int(full.headers["retry-after"]) >= 1
        fits = client.post("/classify", files={"file": ("small.wav", small, "audio/wav")})
        assert fits.status_code == 200, fits.text
        raw = client.post("/classify", content=big, headers={"Content-Type": "audio/wav"})
        assert raw.status_code == 200, raw.text
        metrics = client.get("/metrics").text
        assert 'arinext_rejections_total{reason="no_temp_space"} 3.0' in metrics
    _assert_no_server_error(server)


def test_demo_upload_into_a_full_temp_dir_is_a_retryable_507(
    tmp_path: Path,
    full_tmpdir: Path,
    speech_artifact: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Gradio's upload route spools to the temp directory too; full, it is our 507."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-cache"))
    with (
        _serve(tmp_path, full_tmpdir, speech_artifact, demo="true") as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        files = {"files": ("big.wav", _wav(40.0), "audio/wav")}
        full = client.post("/demo/gradio_api/upload", files=files)
        assert full.status_code == 507, full.text
        assert full.json()["error"]["code"] == "insufficient_storage"
        assert int(full.headers["retry-after"]) >= 1
        assert client.get("/healthz").status_code == 200
    _assert_no_server_error(server)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_file_system_or_quota_is_insufficient_storage(code: int) -> None:
    error = insufficient_storage(OSError(code, "full"), retry_after=3)
    assert error is not None
    assert (error.status, error.code, error.headers) == (
        507,
        "insufficient_storage",
        {"Retry-After": "3"},
    )


def test_other_os_errors_are_not_insufficient_storage() -> None:
    assert insufficient_storage(OSError(errno.EIO, "io"), retry_after=1) is None
    assert insufficient_storage(ValueError("x"), retry_after=1) is None
