"""The Gradio demo: the in-process handler and its pictures, and a real browser on both tabs.

Browser screenshots are kept as test artifacts in ``$TEST_ARTIFACTS_DIR`` (default
``test-artifacts/`` in the checkout, ignored by git).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from arinext.service.demo import (
    EXAMPLES_DIR,
    MAX_HEADS_SHOWN,
    PROGRESS_POLL_SECONDS,
    QUEUE_POLL_SECONDS,
    _quiet_queue,
    run_demo,
)
from arinext.service.detection import KeywordEvent, heard
from arinext.service.settings import EMBEDDED_MODEL_DIR
from tests.service.conftest import isolated_settings, serve_in_process
from tests.service.speech import YES_STOP_GO, espeak_available, keyword_recording

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
DEFAULT_MODEL = EMBEDDED_MODEL_DIR
needs_chromium = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} missing")


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


def test_demo_shows_the_api_top5_a_labelled_spectrogram_and_a_score_timeline(
    demo_client: TestClient,
) -> None:
    clip = EXAMPLES_DIR / "tone-440hz.wav"  # 3 s: three speech_commands windows
    api = demo_client.post(
        "/classify?heads=speech_commands,noun&windows=true",
        content=clip.read_bytes(),
        headers={"content-type": "audio/wav"},
    ).json()
    outputs = _run_demo(demo_client, clip, ["speech_commands", "noun"])
    headline, labels = outputs[0], outputs[1 : 1 + MAX_HEADS_SHOWN]
    spectrogram, timeline = outputs[-2], outputs[-1]
    # A clip longer than a window: what each head heard comes first.
    assert headline.visible is True
    for prediction in api["predictions"]:
        events = [KeywordEvent.model_validate(e) for e in prediction["detections"]]
        assert f"### Heard ({prediction['head']}): {heard(events)}" in headline.value
    for shown, prediction in zip(labels, api["predictions"], strict=False):
        assert shown.visible is True
        assert shown.value["label"] == prediction["top_k"][0]["label"]
        confidences = {c["label"]: c["confidence"] for c in shown.value["confidences"]}
        assert confidences == {s["label"]: round(s["score"], 4) for s in prediction["top_k"]}
    assert all(label.visible is False for label in labels[2:])

    # Rendered figures (their content is checked below, on the figures themselves).
    assert spectrogram.value["type"] == "matplotlib"
    assert timeline.visible is True and timeline.value["type"] == "matplotlib"
    short = _run_demo(demo_client, EXAMPLES_DIR / "yes.wav", ["speech_commands"])
    assert short[-2].value["type"] == "matplotlib"
    assert short[-1].visible is False  # one window: no timeline
    assert short[0].visible is False  # and no headline: the top-5 is the answer


def test_spectrogram_figure_has_axes_in_seconds_and_hz_and_a_colour_bar() -> None:
    from arinext.model.audio_config import PRESETS
    from arinext.service.demo_plots import spectrogram_figure

    cfg = PRESETS["speech_commands"]
    samples, rate = sf.read(EXAMPLES_DIR / "tone-440hz.wav", dtype="float32")
    figure = spectrogram_figure(samples, cfg)
    image_axes, bar_axes = figure.axes
    assert image_axes.get_xlabel() == "time (s)"
    assert image_axes.get_ylabel() == "frequency (Hz, mel scale)"
    assert bar_axes.get_ylabel() == "log mel energy"
    assert image_axes.get_xlim() == pytest.approx((0.0, len(samples) / rate))
    ticks = [t.get_text() for t in image_axes.get_yticklabels()]
    assert ticks == ["0", "250", "500", "1k", "2k", "4k", "8k"]
    # The 440 Hz tone is the brightest band, drawn where 440 Hz sits on the mel axis.
    spec = image_axes.images[0].get_array()
    brightest = int(np.argmax(spec.mean(axis=1)))
    low, high = image_axes.get_ylim()
    centre = low + (brightest + 0.5) * (high - low) / spec.shape[0]
    assert 700 * (10 ** (centre / 2595) - 1) == pytest.approx(440, rel=0.1)


def test_timeline_figure_draws_each_top_class_per_window(demo_client: TestClient) -> None:
    from arinext.service.demo_plots import timeline_figure
    from arinext.service.predict import HeadPrediction

    clip = EXAMPLES_DIR / "tone-440hz.wav"
    api = demo_client.post(
        "/classify?heads=speech_commands&windows=true&top_k=50",
        content=clip.read_bytes(),
        headers={"content-type": "audio/wav"},
    ).json()
    prediction = HeadPrediction.model_validate(api["predictions"][0])
    (axes,) = timeline_figure([prediction]).axes
    assert axes.get_xlabel() == "time (s), window centres" and axes.get_ylabel() == "score"
    lines = [line for line in axes.get_lines() if not line.get_label().startswith("_")]
    assert [line.get_label() for line in lines] == [s.label for s in prediction.top_k[:5]]
    windows = prediction.windows or []
    best = lines[0]
    assert list(best.get_xdata()) == pytest.approx([(w.start + w.end) / 2 for w in windows])
    expected = [next(s.score for s in w.top_k if s.label == best.get_label()) for w in windows]
    assert list(best.get_ydata()) == pytest.approx(expected)


def test_demo_reports_refusals_as_gradio_errors(demo_client: TestClient, tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    with pytest.raises(gr.Error, match="unrecognised audio format"):
        _run_demo(demo_client, junk, ["speech_commands"])
    with pytest.raises(gr.Error, match="Upload or record"):
        _run_demo(demo_client, None, ["speech_commands"])
    with pytest.raises(gr.Error, match="at least one head"):
        _run_demo(demo_client, EXAMPLES_DIR / "yes.wav", [])


@contextlib.contextmanager
def _demo_page(url: str, height: int, extra_args: tuple[str, ...] = ()) -> Iterator[Any]:
    """A headless Chromium page showing the demo at ``url``, closed afterwards."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": height})
            page.goto(f"{url}/demo/", wait_until="domcontentloaded", timeout=60_000)
            yield page
        finally:
            browser.close()


def _wakeups(pid: int) -> int:
    """Times the process's main thread (the event loop) went to sleep and woke since it began."""
    status = Path(f"/proc/{pid}/task/{pid}/status").read_text()
    return next(
        int(line.split()[1])
        for line in status.splitlines()
        if line.startswith("voluntary_ctxt_switches:")
    )


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_an_idle_server_with_the_demo_does_not_wake_its_event_loop_every_millisecond(
    server_factory: Callable, speech_artifact: Path
) -> None:
    """Gradio's queue polls every 1 ms on Linux when idle; the demo sets it to 50 ms."""
    with server_factory(models=speech_artifact, demo="true") as server:
        assert httpx.get(f"{server.url}/demo/", timeout=30).status_code == 200
        pid = server.process.pid
        before, began = _wakeups(pid), time.monotonic()
        time.sleep(2.0)
        rate = (_wakeups(pid) - before) / (time.monotonic() - began)
    # About 890 a second before (the 1 ms and 10 ms polls), 30-40 now (50 and 100 ms polls,
    # uvicorn's 0.1 s tick); a loaded machine only merges timer wake-ups, never adds them.
    assert rate < 300, f"the idle event loop woke {rate:.0f} times a second"


def test_quiet_queue_sets_gradios_poll_intervals_and_says_when_it_cannot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with gr.Blocks() as demo:
        gr.Markdown("-")
    _quiet_queue(demo)
    queue = demo._queue
    assert (queue.sleep_when_free, queue.progress_update_sleep_when_free) == (
        QUEUE_POLL_SECONDS,
        PROGRESS_POLL_SECONDS,
    )
    with caplog.at_level(logging.WARNING, logger="arinext.service.demo"):
        _quiet_queue(object())  # type: ignore[arg-type]  # a Gradio without those attributes
    assert "polls at its own pace" in caplog.text


@pytest.mark.system
@needs_chromium
def test_browser_uploads_a_clip_and_sees_labels_spectrogram_and_timeline(
    server_factory: Callable, speech_artifact: Path, artifacts_dir: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    clip = EXAMPLES_DIR / "tone-440hz.wav"  # 3 s: long enough for the timeline chart
    with server_factory(models=speech_artifact, demo="true") as server:
        answer = httpx.post(
            f"{server.url}/classify",
            content=clip.read_bytes(),
            headers={"content-type": "audio/wav"},
            timeout=30,
        ).json()
        expected = answer["predictions"][0]["top_k"][0]["label"]
        with _demo_page(server.url, height=1400) as page:
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
            for plot in ("#spectrogram", "#timeline"):
                sync_api.expect(page.locator(f"{plot} img")).to_be_visible(timeout=30_000)
                box = page.locator(f"{plot} img").bounding_box()
                assert box is not None and box["width"] > 400 and box["height"] > 150
            page.screenshot(path=artifacts_dir / "demo-clip-pictures.png", full_page=True)


@pytest.mark.system
@needs_chromium
def test_live_tab_hears_the_fake_microphone_say_yes(
    server_factory: Callable, artifacts_dir: Path, tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    word, rate = sf.read(EXAMPLES_DIR / "yes.wav", dtype="float32")
    silence = np.zeros(rate, dtype=np.float32)
    microphone = tmp_path / "microphone.wav"  # Chromium loops it: silence, "yes", silence
    sf.write(microphone, np.concatenate([silence, word, silence]), rate, subtype="PCM_16")
    fake_microphone = (
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
    )
    with (
        server_factory(models=DEFAULT_MODEL, demo="true") as server,
        _demo_page(server.url, height=1000, extra_args=fake_microphone) as page,
    ):
        page.get_by_role("tab", name="Live microphone").click()
        page.click("#live-start")
        status = page.locator("#live-status")
        sync_api.expect(status).to_contain_text("Listening", timeout=30_000)
        detections = page.locator("#live-detections")
        sync_api.expect(detections).to_contain_text("yes at", timeout=60_000)
        # The silence after the word: the default model's _silence_ class reads "no keyword".
        sync_api.expect(page.locator("#live-top")).to_have_text("no keyword", timeout=30_000)
        page.wait_for_timeout(3000)  # a few more seconds of the rolling chart
        page.screenshot(path=artifacts_dir / "demo-live-microphone.png", full_page=True)
        page.click("#live-stop")
        sync_api.expect(status).to_have_text("Stopped.", timeout=30_000)
        heard = detections.locator("li").all_inner_texts()
        assert heard and all(line.startswith("yes at ") for line in heard), heard


@pytest.mark.system
@needs_chromium
@pytest.mark.skipif(not espeak_available(), reason="espeak-ng (Debian) missing")
def test_a_whole_demo_session_hears_what_was_said_and_requests_nothing_missing(
    server_factory: Callable, artifacts_dir: Path, tmp_path: Path
) -> None:
    """Examples played, a recording classified (its headline: what was heard, and when), the
    live tab started and stopped: no request of the page fails."""
    sync_api = pytest.importorskip("playwright.sync_api")
    recording = keyword_recording(script=YES_STOP_GO)
    clip = tmp_path / "yes-stop-go.wav"
    clip.write_bytes(recording.wav_bytes())
    microphone = tmp_path / "microphone.wav"
    sf.write(microphone, recording.samples, 16000, subtype="PCM_16")
    fake_microphone = (
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
    )
    failed: list[tuple[int, str]] = []
    with server_factory(models=DEFAULT_MODEL, demo="true") as server:
        for path, code in (("/manifest.json", 200), ("/favicon.ico", 204)):
            assert httpx.get(f"{server.url}{path}", timeout=10).status_code == code
        with _demo_page(server.url, height=1600, extra_args=fake_microphone) as page:
            page.on(
                "response", lambda r: failed.append((r.status, r.url)) if r.status >= 400 else None
            )
            page.wait_for_selector("#classify", timeout=60_000)
            sync_api.expect(page.get_by_role("checkbox", name="speech_commands")).to_be_checked(
                timeout=30_000
            )
            # A recording of three words: the headline is what was heard, and when.
            page.locator("input[type=file]").first.set_input_files(str(clip))
            page.wait_for_timeout(1500)
            page.click("#classify")
            headline = page.locator("#heard")
            sync_api.expect(headline).to_contain_text("go at", timeout=60_000)
            text = headline.inner_text()
            words = [w.text for w in recording.keywords]
            found = [(text.index(f"{w} at "), w) for w in words]
            assert [w for _, w in sorted(found)] == words, text
            for word in recording.keywords:
                at = float(text.split(f"{word.text} at ")[1].split(" s")[0])
                assert word.start - 0.5 <= at <= word.end + 0.5, text
            sync_api.expect(page.locator("#spectrogram img")).to_be_visible(timeout=30_000)
            page.screenshot(path=artifacts_dir / "demo-heard-headline.png", full_page=True)
            # An example, played: its file comes from the demo's own file route.
            page.get_by_text("yes.wav").first.click()
            play = page.get_by_role("button", name="Play", exact=True)
            sync_api.expect(play).to_be_visible(timeout=30_000)
            play.click()
            page.wait_for_timeout(1500)
            # The live tab, started and stopped: nothing is "heard" after Stop.
            page.get_by_role("tab", name="Live microphone").click()
            page.click("#live-start")
            live_status = page.locator("#live-status")
            sync_api.expect(live_status).to_contain_text("Listening", timeout=30_000)
            page.wait_for_timeout(3000)
            page.click("#live-stop")
            sync_api.expect(live_status).to_have_text("Stopped.", timeout=30_000)
            sync_api.expect(page.locator("#live-top")).to_have_text("\u2014", timeout=10_000)
    assert failed == [], failed
