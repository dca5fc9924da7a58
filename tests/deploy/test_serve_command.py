"""The serving image's commands, run outside Docker: the ENTRYPOINT + CMD command line starts
the real server with the image's environment and only the serve extra's packages importable, and
the HEALTHCHECK command, taken verbatim from the Dockerfile, passes against it within the start
period (and fails while nothing listens)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO
from tests.deploy.dockerfile import Dockerfile, duration_seconds, healthcheck_command
from tests.deploy.serve_only import modules_missing_from_serve_image, write_import_blocker

# The test's own patience; the Dockerfile's start period is longer.
STARTUP_BUDGET_SECONDS = 45.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _moved(path: str, tmp: Path) -> str:
    """An image path under /tmp, moved under this test's ``tmp``."""
    return str(tmp) + path.removeprefix("/tmp") if path.startswith("/tmp") else path


def _image_environment(dockerfile: Dockerfile, tmp: Path) -> dict[str, str]:
    """The runtime stage's ENV, with /tmp moved under ``tmp`` and this venv's PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARINEXT_")}
    env.update({k: _moved(v, tmp) for k, v in dockerfile.final.env.items() if k != "PATH"})
    # `python` and `arinext` of the image are the venv's: here, this interpreter's directory.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    # Only what the serve extra installs is importable; the package itself from the checkout.
    blocker = tmp / "serve-only"
    lockfile = REPO / "requirements" / "serve.txt"
    write_import_blocker(blocker, modules_missing_from_serve_image(lockfile))
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), str(REPO)])
    return env


def _server_command(dockerfile: Dockerfile) -> list[str]:
    """ENTRYPOINT + CMD: no address on the command line, the environment gives it."""
    command = dockerfile.final.last("ENTRYPOINT").exec_form + dockerfile.final.last("CMD").exec_form
    assert command[0] == "arinext"
    assert "--port" not in command and "--host" not in command
    # The console script when the package is installed here, else the module it points to.
    script = shutil.which("arinext", path=str(Path(sys.executable).parent))
    program = [script] if script else [sys.executable, "-m", "arinext"]
    return [*program, *command[1:]]


def _healthcheck(command: list[str], env: dict[str, str], cwd: Path) -> int:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, timeout=10).returncode


def test_entrypoint_serves_and_healthcheck_passes(
    serve_dockerfile: Dockerfile, tiny_artifact: Path, tmp_path: Path
) -> None:
    dockerfile = serve_dockerfile
    healthcheck = dockerfile.final.last("HEALTHCHECK")
    probe = healthcheck_command(healthcheck)
    start_period = duration_seconds(healthcheck.flags["start-period"])
    port = _free_port()
    env = _image_environment(dockerfile, tmp_path)
    env.update(
        ARINEXT_MODELS=str(tiny_artifact),
        # The healthcheck and the server agree on the port through ARINEXT_PORT, as in the image
        # (`docker run -e ARINEXT_PORT=...` moves both); loopback instead of the image's 0.0.0.0.
        ARINEXT_PORT=str(port),
        ARINEXT_HOST="127.0.0.1",
        ARINEXT_DRAIN_SECONDS="0.2",
    )
    workdir = Path(_moved(dockerfile.final.last("WORKDIR").args, tmp_path))
    workdir.mkdir(parents=True, exist_ok=True)

    # Nothing listens yet: the probe must fail with 1 (Docker reserves 2).
    assert _healthcheck(probe, env, workdir) == 1

    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            _server_command(dockerfile),
            env=env,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        started = time.monotonic()
        while (code := _healthcheck(probe, env, workdir)) != 0:
            assert server.poll() is None, f"server exited:\n{log.read_text()}"
            assert time.monotonic() - started < STARTUP_BUDGET_SECONDS, log.read_text()
            time.sleep(0.25)
        healthy_after = time.monotonic() - started
        assert code == 0
        assert healthy_after < start_period, "HEALTHCHECK --start-period is shorter than startup"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            pytest.fail(f"server ignored SIGTERM:\n{log.read_text()}")
    # `docker stop` sends SIGTERM: the server drains and exits, either with 0 or by re-raising
    # the signal once shut down (uvicorn does; Docker shows 143).
    assert server.returncode in (0, -signal.SIGTERM), log.read_text()
