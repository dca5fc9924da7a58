"""The demo's *Teach a word* tab (issue #36): phrase and takes checked, one bounded run at a
time, its model served; and the whole flow in a real browser with a fake microphone.

What is real here: the server, the tab, the browser recording the takes, the worker process
with its limits, the progress it reports, the busy answer, the verification and serving of the
artifact it writes, and the live tab hearing it. What is a stand-in: the trainer.
``tests/fixtures/fake_train_keywords.py`` takes ``arinext train-keywords``'s arguments and prints
its progress bars, but its model answers the phrase for any window louder than the takes'
midpoint (it learns a loudness from them, not the phrase), so a run takes seconds instead of
minutes. The production default, ``ARINEXT_DEMO_TEACH_COMMAND``, runs ``arinext train-keywords``.
"""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from pydantic import ValidationError

from arinext.service.app import create_app
from arinext.service.settings import EMBEDDED_MODEL_DIR, TEACH_COMMAND
from arinext.service.teach import (
    MODEL_NAME,
    TeachBusyError,
    Teacher,
    TeachError,
    normalise_phrase,
    parse_progress,
    trainer_argv,
)
from arinext.service.teach_launcher import launcher_argv
from tests.service.conftest import REPO, isolated_settings, serve_in_process
from tests.service.speech import SAMPLE_RATE, espeak_available, say
from tests.service.test_demo import _demo_page, needs_chromium

PHRASE = "lights on"
FAKE_TRAINER = REPO / "tests" / "fixtures" / "fake_train_keywords.py"
needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng (Debian) missing")


def fake_command(seconds: float) -> str:
    """The stand-in trainer, as ``ARINEXT_DEMO_TEACH_COMMAND``."""
    return shlex.join([sys.executable, str(FAKE_TRAINER), "{phrase}"]) + (
        f" --recordings {{recordings}} --out {{out}} --name {{name}} --progress json"
        f" --seconds {seconds}"
    )


def between_quiet(sound: np.ndarray, pad_s: float = 0.5) -> np.ndarray:
    """``sound`` between stretches of quiet (-60 dBFS noise)."""
    rng = np.random.default_rng(0)
    quiet = lambda: rng.normal(0, 1e-3, int(pad_s * SAMPLE_RATE)).astype(np.float32)  # noqa: E731
    return np.concatenate([quiet(), sound, quiet()])


def take(pad_s: float = 0.5) -> bytes:
    """A take for the stand-in trainer, which hears loudness only: 0.7 s of tones in quiet."""
    t = np.arange(int(0.7 * SAMPLE_RATE)) / SAMPLE_RATE
    tones = 0.2 * (np.sin(2 * np.pi * 220 * t) + np.sin(2 * np.pi * 1250 * t))
    return wav(between_quiet(tones.astype(np.float32), pad_s))


def wav(samples: np.ndarray) -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return out.getvalue()


def test_phrases_are_words_of_letters() -> None:
    assert normalise_phrase("  Lights   ON ") == "lights on"
    assert normalise_phrase("don't stop") == "don't stop"
    for bad in ("", "lights-on", "--out /etc", "one two three four five six", "x" * 49, "l1ght"):
        with pytest.raises(TeachError):
            normalise_phrase(bad)


def test_progress_is_read_from_the_trainers_json_lines() -> None:
    line = '{"event": "progress", "stage": "embedding", "done": 48, "total": 120}'
    assert parse_progress(line) == ("embedding", 48, 120)
    assert parse_progress("2026-12-07 INFO training.keywords: wrote /tmp/x") is None
    assert parse_progress('{"event": "result", "artifact": "/tmp/x"}') is None
    assert parse_progress('{"event": "progress", "stage": "training"') is None  # cut short
    assert parse_progress('{"event": "progress", "stage": 3, "done": 1, "total": 2}') is None


def test_the_command_keeps_a_phrase_one_argument_and_runs_arinext_with_this_python() -> None:
    argv = trainer_argv(TEACH_COMMAND, phrase="lights on", recordings="/r", out="/o", name="n")
    assert argv == [
        *(sys.executable, "-m", "arinext", "train-keywords", "lights on"),
        *("--recordings", "/r", "--out", "/o", "--name", "n", "--progress", "json"),
    ]


def test_a_command_must_name_the_phrase_and_the_output_and_nothing_unknown() -> None:
    for command in ("train {phrase}", "train {phrase} {out} {nope}", "train 'unclosed"):
        with pytest.raises(ValidationError):
            isolated_settings(demo_teach_command=command)
    with pytest.raises(RuntimeError, match="ARINEXT_DEMO=true"):
        create_app(isolated_settings(demo=False, demo_teach=True))


@pytest.fixture
def teach_client(speech_artifact: Path) -> Iterator[TestClient]:
    settings = isolated_settings(
        models=[speech_artifact], demo=True, demo_teach=True, demo_teach_command=fake_command(2)
    )
    with serve_in_process(settings) as client:
        yield client


def _wait(teacher: Teacher, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while teacher.job is not None and teacher.job.running:
        assert time.monotonic() < deadline, teacher.job.describe()
        time.sleep(0.1)


def test_a_run_is_served_refuses_a_second_meanwhile_and_leaves_no_takes(
    teach_client: TestClient,
) -> None:
    teacher: Teacher = teach_client.app.state.teacher  # type: ignore[attr-defined]
    takes = [take() for _ in range(3)]
    start = lambda phrase, clips: teach_client.portal.call(teacher.start, phrase, clips)  # noqa: E731
    with pytest.raises(TeachError, match="3 to 5 times"):
        start(PHRASE, takes[:2])
    with pytest.raises(TeachError, match="Take 2 is not audio"):
        start(PHRASE, [takes[0], b"RIFF junk", takes[0]])
    job = start("Lights On", takes)
    assert job.running and job.phrase == PHRASE
    with pytest.raises(TeachBusyError, match=r"busy: teaching 'lights on', try again in ~\d+ s"):
        start("next slide", takes)
    stages = set()
    while job.running:
        stages.add(job.stage)
        time.sleep(0.05)
    assert job.state == "done", job.message
    assert {"synthesis", "training"} <= stages
    assert f"model `{MODEL_NAME}` (head {MODEL_NAME}) is served now" in job.describe()
    heads = {h["head"]: h for h in teach_client.get("/models").json()["heads"]}
    assert heads[MODEL_NAME]["labels"][0] == PHRASE
    run_folders = [p for p in teacher._root.iterdir()]  # type: ignore[union-attr]
    assert len(run_folders) == 1 and not (run_folders[0] / "recordings").exists()
    # The served model hears the phrase (the tones) once, and not the quiet around it.
    answer = teach_client.post(
        f"/classify?heads={MODEL_NAME}",
        content=take(pad_s=1.5),
        headers={"content-type": "audio/wav"},
    ).json()
    assert [d["label"] for d in answer["predictions"][0]["detections"]] == [PHRASE]


def test_a_run_past_its_time_limit_or_at_shutdown_is_killed(speech_artifact: Path) -> None:
    settings = isolated_settings(
        models=[speech_artifact],
        demo=True,
        demo_teach=True,
        demo_teach_command=fake_command(60),
        demo_teach_timeout_seconds=1.5,
    )
    with serve_in_process(settings) as client:
        teacher: Teacher = client.app.state.teacher  # type: ignore[attr-defined]
        client.portal.call(teacher.start, PHRASE, [take()] * 3)
        _wait(teacher)
        assert teacher.job is not None and teacher.job.state == "failed"
        assert "stopped after 2 s, its time limit" in teacher.job.message
        root = teacher._root
        assert root is not None and list(root.iterdir()) == []
        teacher.settings = settings.model_copy(update={"demo_teach_timeout_seconds": 60.0})
        client.portal.call(teacher.start, PHRASE, [take()] * 3)
        while teacher._process is None:
            time.sleep(0.05)
        pid = teacher._process.pid
    with pytest.raises(ProcessLookupError):  # killed and reaped when the server stopped
        os.kill(pid, 0)
    assert not root.exists()


def test_the_launcher_bounds_memory_and_priority_then_runs_the_command() -> None:
    probe = "import os, resource; print(resource.getrlimit(resource.RLIMIT_AS)[0], os.nice(0))"
    command = launcher_argv([sys.executable, "-c", probe], memory_bytes=3_000_000_000, niceness=3)
    shown = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    assert shown.stdout.split() == ["3000000000", str(os.nice(0) + 3)]


@pytest.mark.system
@needs_chromium
@needs_espeak
def test_the_browser_teaches_a_word_and_the_live_tab_hears_it(
    server_factory: Callable, artifacts_dir: Path, tmp_path: Path
) -> None:
    """Type the phrase, record 3 takes from the fake microphone, Teach, Teach again while it
    runs (busy), /classify answers meanwhile, and the live tab then detects the phrase."""
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    microphone = tmp_path / "microphone.wav"  # Chromium loops it: quiet, the phrase, quiet
    sf.write(microphone, between_quiet(say(PHRASE), pad_s=1.0), SAMPLE_RATE, subtype="PCM_16")
    fake_microphone = (
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
    )
    clip = (REPO / "service" / "examples" / "yes.wav").read_bytes()
    with (
        server_factory(
            models=EMBEDDED_MODEL_DIR,
            demo="true",
            demo_teach="true",
            demo_teach_command=fake_command(12),  # long enough to press Teach again meanwhile
        ) as server,
        _demo_page(server.url, height=1400, extra_args=fake_microphone) as page,
    ):
        page.get_by_role("tab", name="Teach a word").click()
        page.locator("#teach-phrase textarea").fill(PHRASE)
        for take in (1, 2, 3):
            box = page.locator(f"#teach-take-{take}")
            box.get_by_role("button", name="Record", exact=True).click()
            page.wait_for_timeout(2600)  # a whole loop of the microphone's file
            box.get_by_role("button", name="Stop", exact=True).click()
            # The take's download link points at the server's copy: it is uploaded (the
            # player alone can show before the upload ends, and Teach would then miss it).
            expect(box.locator('a[href*="/file="]').first).to_be_attached(timeout=30_000)
        page.click("#teach-button")
        status = page.locator("#teach-status")
        try:
            expect(status).to_contain_text(f"Teaching '{PHRASE}'", timeout=30_000)
        except AssertionError as exc:  # the server's log says why a press was refused
            raise AssertionError(f"{exc}\n{server.log_text()[-3000:]}") from None
        expect(status).to_contain_text("/", timeout=60_000)  # a stage's progress: done/total
        page.click("#teach-button")
        expect(page.get_by_text(f"busy: teaching '{PHRASE}', try again in")).to_be_visible(
            timeout=15_000
        )
        meanwhile = httpx.post(
            f"{server.url}/classify",
            content=clip,
            headers={"content-type": "audio/wav"},
            timeout=30,
        )
        assert meanwhile.status_code == 200, meanwhile.text
        expect(status).to_contain_text(f"Learnt '{PHRASE}'", timeout=60_000)
        page.screenshot(path=artifacts_dir / "demo-teach-a-word.png", full_page=True)
        page.get_by_role("tab", name="Live microphone").click()
        page.click("#live-start")
        expect(page.locator("#live-status")).to_contain_text("Listening", timeout=30_000)
        expect(page.locator("#live-detections")).to_contain_text(f"{PHRASE} at", timeout=60_000)
        page.screenshot(path=artifacts_dir / "demo-teach-live.png", full_page=True)
        page.click("#live-stop")
