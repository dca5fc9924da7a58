"""``/docs`` renders with no network beyond the server, and ``GET /`` leads to a page.

The browser test lets Chromium reach only the server: every request to another host is aborted
and recorded, so a page that needed a CDN would both be blank and show up in the list.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from arinext.service.app import create_app
from tests.service.conftest import REPO, isolated_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
needs_chromium = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} missing")


def test_home_redirects_to_the_demo_or_the_docs() -> None:
    for demo, target in ((False, "/docs"), (True, "/demo/")):
        client = TestClient(create_app(isolated_settings(demo=demo)))  # no lifespan: no models
        answer = client.get("/", follow_redirects=False)
        assert answer.status_code == 307 and answer.headers["location"] == target


def test_docs_page_points_at_local_assets_that_exist(speech_client: TestClient) -> None:
    page = speech_client.get("/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text and "https://" not in page.text.split("<body>")[0]
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"):
        assert f"/docs/assets/{asset}" in page.text
        answer = speech_client.get(f"/docs/assets/{asset}")
        assert answer.status_code == 200 and len(answer.content) > 500, asset
    assert speech_client.get("/redoc").status_code == 404  # ReDoc would need a CDN


@pytest.mark.system
@needs_chromium
def test_chromium_lists_the_operations_without_network(
    server_factory: Callable, speech_artifact: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    artifacts = Path(os.environ.get("TEST_ARTIFACTS_DIR", REPO / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    with server_factory(models=speech_artifact) as server:
        home = httpx.get(server.url + "/", follow_redirects=False)
        assert home.headers["location"] == "/docs"
        local = urlsplit(server.url).netloc
        elsewhere: list[str] = []

        def only_the_server(route) -> None:
            if urlsplit(route.request.url).netloc == local:
                route.continue_()
            else:
                elsewhere.append(route.request.url)
                route.abort("internetdisconnected")

        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1600})
                page.route("**/*", only_the_server)
                page.goto(server.url + "/", wait_until="domcontentloaded", timeout=60_000)
                assert page.url == server.url + "/docs"
                paths = page.locator(".opblock-summary-path")
                sync_api.expect(paths.first).to_be_visible(timeout=60_000)
                listed = {p.strip().replace("\u200b", "") for p in paths.all_inner_texts()}
                page.screenshot(path=artifacts / "docs-offline.png", full_page=True)
            finally:
                browser.close()
    assert {"/classify", "/models", "/v2/models/{name}/infer"} <= listed
    assert elsewhere == []
