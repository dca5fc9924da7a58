"""Fixtures of the deployment tests: the repository's deployment files, the resolved compose
file, a tiny artifact and the live ``/metrics`` of the real app."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from arinext.model.audio_config import PRESETS
from arinext.model.labels import resolve_labels
from tests.deploy.dockerfile import Dockerfile

if TYPE_CHECKING:
    from arinext.service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"

# Variables the compose file interpolates: unset, so that `config` shows the file's defaults.
_COMPOSE_VARIABLE_PREFIXES = ("ARINEXT_", "API_", "TRAIN_", "GRAFANA_", "PROMETHEUS_", "COMPOSE_")


_PACKAGES = {"promtool": "prometheus", "docker-compose": "docker-compose"}


def require_binary(name: str) -> str:
    """The path of a Debian program, or skip the test saying how to get it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {_PACKAGES.get(name, name)})")
    return path


@pytest.fixture(scope="session")
def serve_dockerfile() -> Dockerfile:
    return Dockerfile(REPO / "docker" / "serve.Dockerfile")


@pytest.fixture(scope="session")
def train_dockerfile() -> Dockerfile:
    return Dockerfile(REPO / "docker" / "train.Dockerfile")


def run_compose(*args: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f docker-compose.yml ARGS`` with the file's interpolation defaults."""
    binary = require_binary("docker-compose")
    env = {k: v for k, v in os.environ.items() if not k.startswith(_COMPOSE_VARIABLE_PREFIXES)}
    return subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="session")
def compose_config() -> dict:
    """The compose file as Debian's docker-compose resolves it (`docker-compose config`)."""
    result = run_compose("config")
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random speech_commands artifact, built by the service tests' helper."""
    from tests.service.artifacts import make_tiny_artifact

    directory = tmp_path_factory.mktemp("artifacts") / "tiny-speech-commands"
    make_tiny_artifact(
        directory,
        name="tiny-speech-commands",
        frontend=PRESETS["speech_commands"],
        labels=resolve_labels("speech_commands"),
    )
    return directory


@pytest.fixture(scope="session")
def live_metrics_text(tiny_artifact: Path) -> str:
    """``GET /metrics`` of ``arinext.service.app:create_app`` serving the tiny artifact, after one
    classification and one refused upload, so that every labelled series exists."""
    from tests.service.audio import encode_sf, signal
    from tests.service.conftest import isolated_settings, serve_in_process

    clip = encode_sf(signal(1.0, 16000), 16000, "WAV")
    wav = {"content-type": "audio/wav"}
    with serve_in_process(isolated_settings(models=[tiny_artifact])) as client:
        answer = client.post("/classify", content=clip, headers=wav)
        assert answer.status_code == 200, answer.text
        refused = client.post("/classify", content=b"not audio", headers=wav)
        assert 400 <= refused.status_code < 500, refused.text
        response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return response.text


def parse_service_environment(environment: dict[str, str]) -> Settings:
    """The service's ``Settings`` read from ``environment`` alone; fails on unknown names."""
    from arinext.service.settings import Settings

    known = {f"ARINEXT_{name.upper()}" for name in Settings.model_fields}
    unknown = {name for name in environment if name.startswith("ARINEXT_")} - known
    assert not unknown, f"not service settings: {sorted(unknown)}"
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("ARINEXT_")]:
            patch.delenv(name)
        for name, value in environment.items():
            if name.startswith("ARINEXT_"):
                patch.setenv(name, str(value))
        return Settings()
