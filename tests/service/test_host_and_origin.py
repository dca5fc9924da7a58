"""Neither ``Host`` nor ``Origin`` is reflected (issue 38, item 7), against a real server with
the demo: slash redirects are relative, and the demo sends no CORS grants to other origins."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import ServerProcess, run_server

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gradio") is None, reason="the demo (Gradio) is not installed"
)
EVIL = "evil.example"


@pytest.fixture(scope="module")
def demo_server(
    tmp_path_factory: pytest.TempPathFactory, speech_artifact: Path
) -> Iterator[ServerProcess]:
    with run_server(
        tmp_path_factory.mktemp("host-origin"), models=speech_artifact, demo="true"
    ) as server:
        yield server


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/demo", "/demo/"),  # the mount
        ("/models/", "/models"),  # an API route
        ("/v2/models/tiny-speech-commands/", "/v2/models/tiny-speech-commands"),
        ("/demo?x=1", "/demo/?x=1"),
    ],
)
@pytest.mark.parametrize("host", [EVIL, f"{EVIL}:8443", "EVIL.example", f"{EVIL}/x"])
def test_slash_redirects_are_relative_whatever_the_host(
    demo_server: ServerProcess, path: str, location: str, host: str
) -> None:
    response = httpx.get(f"{demo_server.url}{path}", headers={"Host": host})
    assert response.status_code == 307, response.text
    assert response.headers["location"] == location


def test_a_redirect_never_points_at_another_host(demo_server: ServerProcess) -> None:
    """The relative path is never ``//host`` (a reference to another host)."""
    with httpx.Client(base_url=demo_server.url) as client:
        for path in ("//evil.example", "/%2F/evil.example", "//evil.example/models/"):
            response = client.get(path, headers={"Host": EVIL})
            location = response.headers.get("location", "")
            assert not location.startswith(("//", "/\\", "http")), (path, location)
            assert EVIL not in location or location.startswith("/"), (path, location)


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        (None, "http://localhost:1234"),  # another local app, by port
        (None, "http://127.0.0.1:1"),
        ("demo.example", f"https://{EVIL}"),  # a public name: Gradio allowed any origin
        (None, "null"),
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/demo/config"),
        ("GET", "/demo/gradio_api/info"),
        ("POST", "/demo/gradio_api/upload"),
        ("OPTIONS", "/demo/gradio_api/upload"),  # a preflight
        ("OPTIONS", "/demo/gradio_api/queue/join"),
    ],
)
def test_the_demo_grants_no_other_origin_cors_with_credentials(
    demo_server: ServerProcess, host: str | None, origin: str, method: str, path: str
) -> None:
    headers = {"Origin": origin}
    if host is not None:
        headers["Host"] = host
    if method == "OPTIONS":
        headers["Access-Control-Request-Method"] = "POST"
        headers["Access-Control-Request-Headers"] = "content-type"
    response = httpx.request(method, f"{demo_server.url}{path}", headers=headers)
    assert response.status_code < 500, response.text
    granted = {k: v for k, v in response.headers.items() if k.startswith("access-control-")}
    assert not granted, granted


def test_the_demo_still_works_from_its_own_page(demo_server: ServerProcess) -> None:
    """Same-origin requests (what the demo's page sends) need no CORS and are served."""
    own = {"Origin": demo_server.url}
    with httpx.Client(base_url=demo_server.url, headers=own, timeout=30) as client:
        assert client.get("/demo/").status_code == 200
        assert client.get("/demo/config").status_code == 200
        clip = (Path(__file__).parents[2] / "service" / "examples" / "yes.wav").read_bytes()
        upload = client.post("/demo/gradio_api/upload", files={"files": ("yes.wav", clip)})
        assert upload.status_code == 200, upload.text
