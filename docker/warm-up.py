"""Serve once while building the serving image, so that Python leaves compiled bytecode
(``__pycache__``) for exactly the modules the server imports, and none for the rest of the venv.

The image runs with a read-only root filesystem, where Python cannot cache what it compiles:
modules without bytecode are compiled again at every start. Bytecode for what the server really
imports, answering a request included, keeps start-up fast without shipping bytecode for the
large parts of the dependencies it never imports (most of SciPy, ONNX Runtime's tooling, ...).

    python docker/warm-up.py ARTIFACT_DIR
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib import resources

STARTUP_SECONDS = 180


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status(url: str, body: bytes | None = None) -> int:
    headers = {"content-type": "audio/wav"} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def main(artifact: str) -> int:
    port = _free_port()
    env = dict(os.environ, ARINEXT_MODELS=artifact, ARINEXT_HOST="127.0.0.1")
    env.update(ARINEXT_PORT=str(port), ARINEXT_DRAIN_SECONDS="0")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    server = subprocess.Popen(["arinext", "serve"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while _status(f"{url}/readyz") != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                sys.stderr.write("warm-up: the server did not become ready\n")
                return 1
            time.sleep(0.5)
        clip = (resources.files("arinext.service") / "examples" / "yes.wav").read_bytes()
        checks = {
            "/classify": _status(f"{url}/classify", clip),
            "/metrics": _status(f"{url}/metrics"),
        }
        if env.get("ARINEXT_DEMO", "true").lower() in ("1", "true", "yes", "on"):
            checks["/demo/"] = _status(f"{url}/demo/")
        failed = {path: code for path, code in checks.items() if code != 200}
        if failed:
            sys.stderr.write(f"warm-up: {failed}\n")
            return 1
        return 0
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
