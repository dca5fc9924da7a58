"""Fixtures for service tests: tiny artifacts (built once per session), apps and real servers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from arinext.model.audio_config import PRESETS
from arinext.model.labels import resolve_labels
from arinext.service.app import create_app
from arinext.service.settings import Settings
from tests.service.artifacts import make_tiny_artifact

REPO = Path(__file__).resolve().parents[2]
# The inference backend the service tests run on (arinext.model.backends):
# SERVICE_TEST_BACKEND=openvino runs the same tests on OpenVINO (tests/service/test_backends.py
# does, with precision f32).
TEST_BACKEND = os.environ.get("SERVICE_TEST_BACKEND", "onnxruntime")
TEST_PRECISION = os.environ.get("SERVICE_TEST_PRECISION", "auto")
READY_TIMEOUT_S = 180.0


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One random tiny artifact per audio preset, with that preset's bundled labels.

    ``epic_kitchens_100`` has two heads (verb 97, noun 300), like the real model.
    """
    root = tmp_path_factory.mktemp("artifacts")
    out = {}
    for seed, (preset, cfg) in enumerate(PRESETS.items()):
        directory = root / f"tiny-{preset}"
        make_tiny_artifact(
            directory,
            name=f"tiny-{preset.replace('_', '-')}",
            frontend=cfg,
            labels=resolve_labels(preset),
            seed=seed,
        )
        out[preset] = directory
    return out


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where browser screenshots are kept for people to look at."""
    directory = Path(os.environ.get("TEST_ARTIFACTS_DIR", REPO / "test-artifacts"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="session")
def speech_artifact(tiny_artifacts: dict[str, Path]) -> Path:
    """The tiny speech_commands artifact (16 kHz, 1.023 s views)."""
    return tiny_artifacts["speech_commands"]


@pytest.fixture(scope="session")
def slow_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A speech_commands-shaped artifact that takes tens of milliseconds per window."""
    directory = tmp_path_factory.mktemp("slow") / "slow-speech"
    make_tiny_artifact(
        directory,
        name="slow-speech",
        frontend=PRESETS["speech_commands"],
        labels=resolve_labels("speech_commands"),
        channels=24,
        slow_layers=4,
    )
    return directory


def isolated_settings(**overrides: object) -> Settings:
    """Settings isolated from the environment and the embedded model, sized for two cores."""
    values: dict[str, object] = {
        "demo": False,
        "intra_op_threads": 1,
        "default_model_dir": Path("/nonexistent/arinext-default-model"),
        "drain_seconds": 0.0,
        "backend": TEST_BACKEND,
        "precision": TEST_PRECISION,
    }
    values.update(overrides)
    return Settings(**values)


def wait_ready(client: TestClient | httpx.Client, timeout: float = READY_TIMEOUT_S) -> None:
    """Poll /readyz until 200 (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"not ready after {timeout} s: {client.get('/readyz').text}")


@contextlib.contextmanager
def serve_in_process(settings: Settings, *, ready: bool = True) -> Iterator[TestClient]:
    """A TestClient with the lifespan running; waits for readiness unless ``ready`` is False."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        if ready:
            wait_ready(client)
        yield client


@pytest.fixture(scope="module")
def speech_client(speech_artifact: Path) -> Iterator[TestClient]:
    """An in-process app serving the tiny speech_commands model with default limits."""
    with serve_in_process(isolated_settings(models=[speech_artifact])) as client:
        yield client


# --- real uvicorn processes ---------------------------------------------------------------------


def free_port() -> int:
    """A currently free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    """A running server subprocess and its base URL."""

    process: subprocess.Popen
    url: str
    log: Path

    def log_text(self) -> str:
        """What the server wrote so far (for assertion messages)."""
        return self.log.read_text(errors="replace")


def server_env(**settings: object) -> dict[str, str]:
    """Environment for a server subprocess: ARINEXT_* from ``settings``, nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARINEXT_")}
    env.update(
        {
            "ARINEXT_DEFAULT_MODEL_DIR": "/nonexistent/arinext-default-model",
            "ARINEXT_INTRA_OP_THREADS": "1",
            "ARINEXT_DEMO": "false",
            "ARINEXT_BACKEND": TEST_BACKEND,
            "ARINEXT_PRECISION": TEST_PRECISION,
            "GRADIO_ANALYTICS_ENABLED": "False",
            "PYTHONPATH": str(REPO),
        }
    )
    env.update({f"ARINEXT_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@contextlib.contextmanager
def run_server(
    tmp_path: Path,
    command: list[str] | None = None,
    *,
    ready: bool = True,
    cpu: int | None = None,
    **settings: object,
) -> Iterator[ServerProcess]:
    """Start a real server (``uvicorn --factory arinext.service.app:create_app`` unless
    ``command``), on the one CPU ``cpu`` if given (``taskset``).

    Waits (bounded) for /readyz, and always stops the process on exit.
    """
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    if command is None:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "arinext.service.app:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
    else:
        settings = {**settings, "port": port, "host": "127.0.0.1"}
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=REPO, env=server_env(**settings), stdout=sink, stderr=subprocess.STDOUT
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(base_url=server.url, timeout=5.0) as client:
            while True:
                if process.poll() is not None:
                    raise AssertionError(f"server exited early:\n{server.log_text()}")
                with contextlib.suppress(httpx.TransportError):
                    probe = client.get("/readyz" if ready else "/healthz")
                    if probe.status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise AssertionError(f"server not up in time:\n{server.log_text()}")
                time.sleep(0.1)
        yield server
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit in ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., contextlib.AbstractContextManager]]:
    """``server_factory(**settings)`` -> context manager of a :class:`ServerProcess`."""
    yield lambda command=None, ready=True, cpu=None, **settings: run_server(
        tmp_path, command, ready=ready, cpu=cpu, **settings
    )
