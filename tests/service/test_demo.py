"""The Gradio demo: the in-process handler, and a real browser uploading a clip."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.demo import EXAMPLES_DIR, MAX_HEADS_SHOWN, run_demo
from tests.service.conftest import isolated_settings, serve_in_process

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def demo_client(tiny_artifacts: dict[str, Path]) -> Iterator[TestClient]:
    models = [tiny_artifacts["speech_commands"], tiny_artifacts["epic_kitchens_100"]]
    with serve_in_process(isolated_settings(models=models, demo=True)) as client:
        yield client


def _run_demo(client: TestClient, path: Path | None, heads: list[str]) -> list:
    app = client.app
    return client.portal.call(run_demo, app.state.models, app.state.settings, path, heads)


def test_examples_are_bundled() -> None:
    assert sorted(p.name for p in EXAMPLES_DIR.glob("*.wav")) == [
        "stop.wav",
        "tone-440hz.wav",
        "yes.wav",
    ]


def test_demo_page_is_mounted(demo_client: TestClient) -> None:
    page = demo_client.get("/demo/")
    assert page.status_code == 200
    assert "<html" in page.text.lower()


def test_demo_shows_the_same_top5_as_the_api_plus_spectrogram_and_timeline(
    demo_client: TestClient,
) -> None:
    clip = EXAMPLES_DIR / "tone-440hz.wav"  # 3 s: three speech_commands windows
    api = demo_client.post(
        "/classify?heads=speech_commands,noun&windows=true",
        content=clip.read_bytes(),
        headers={"content-type": "audio/wav"},
    ).json()
    outputs = _run_demo(demo_client, clip, ["speech_commands", "noun"])
    labels, image, timeline = outputs[:MAX_HEADS_SHOWN], outputs[-2], outputs[-1]
    for shown, prediction in zip(labels, api["predictions"], strict=False):
        assert shown.visible is True
        assert shown.value["label"] == prediction["top_k"][0]["label"]
        confidences = {c["label"]: c["confidence"] for c in shown.value["confidences"]}
        assert confidences == {s["label"]: s["score"] for s in prediction["top_k"]}
    assert all(label.visible is False for label in labels[2:])
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8
    assert image.shape[0] == 256 and image.shape[2] == 3
    windows = sum(len(p["windows"]) for p in api["predictions"])
    assert timeline.visible is True
    assert len(timeline.value["data"]) == windows


def test_demo_reports_refusals_as_gradio_errors(demo_client: TestClient, tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    with pytest.raises(gr.Error, match="unrecognised audio format"):
        _run_demo(demo_client, junk, ["speech_commands"])
    with pytest.raises(gr.Error, match="Upload or record"):
        _run_demo(demo_client, None, ["speech_commands"])
    with pytest.raises(gr.Error, match="at least one head"):
        _run_demo(demo_client, EXAMPLES_DIR / "yes.wav", [])


@pytest.mark.system
@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} (Debian) missing")
def test_browser_uploads_a_clip_and_reads_the_top_label(
    server_factory: Callable, speech_artifact: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    clip = EXAMPLES_DIR / "yes.wav"
    with server_factory(models=speech_artifact, demo="true") as server:
        answer = httpx.post(
            f"{server.url}/classify",
            content=clip.read_bytes(),
            headers={"content-type": "audio/wav"},
            timeout=30,
        ).json()
        expected = answer["predictions"][0]["top_k"][0]["label"]
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(f"{server.url}/demo/", wait_until="domcontentloaded", timeout=60_000)
                page.wait_for_selector("#classify", timeout=60_000)
                # The head choices arrive with the page's load event (models load after startup).
                head = page.get_by_role("checkbox", name="speech_commands")
                sync_api.expect(head).to_be_checked(timeout=30_000)
                page.locator("input[type=file]").first.set_input_files(str(clip))
                page.wait_for_selector("audio, wave, [data-testid='waveform-Clip']", timeout=30_000)
                page.click("#classify")
                top = page.locator("#head-0 h2")
                sync_api.expect(top).to_have_text(expected, timeout=60_000)
                assert "speech_commands" in page.locator("#head-0").inner_text()
            finally:
                browser.close()
