"""The default model live: recorded keywords over recorded room noise through ``WS /stream``.

Twenty-four 10 s scenes (:mod:`arinext.training.scenes`: three words by speakers held out from
training, over held-out room noise at 15-30 dB SNR) stream at real time, all at once, through a
running server with the stream's default settings. Measured from the client: keywords detected where
they were said, wrong detections per minute of audio, and each window's lag (the chunk that
completed the window sent -> its event received).

The recordings are read from ``../shared/speech_commands_subset`` beside the checkout (a user's
clone has none: then the test is skipped and says so).
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from websockets.sync.client import connect

from arinext.service.settings import EMBEDDED_MODEL_DIR
from arinext.training.scenes import Scene, build_scenes, match_detections
from tests.service.conftest import REPO, ServerProcess, run_server

RECORDINGS = REPO.parent / "shared" / "speech_commands_subset"
RATE = 16000
CHUNK_SECONDS = 0.1
SCENES = 24
# A little under what the shipped model measured on these scenes (docs/default-model.md, "Live
# detection", which also compares the issue's targets, 90 % and 1 a minute).
DETECTED = 0.8
WRONG_PER_MINUTE = 1.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.alone,  # the lag bound holds for the server's own CPU, not beside other tests
    pytest.mark.skipif(
        not RECORDINGS.is_dir(),
        reason=f"{RECORDINGS} (recorded Speech Commands clips) is not beside this checkout",
    ),
]


def _stream(server: ServerProcess, scene: Scene, out: dict) -> None:
    """Send ``scene`` at real time in 100 ms messages; collect detections and window lags."""
    data = (np.clip(scene.samples, -1, 1) * 32767).astype("<i2").tobytes()
    chunk = round(CHUNK_SECONDS * RATE) * 2
    sent_at: list[tuple[float, float]] = []  # (audio seconds sent so far, when)
    url = server.url.replace("http://", "ws://") + "/stream"
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"type": "start", "format": "s16le", "sample_rate": RATE}))
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"

        def send() -> None:
            began = time.monotonic()
            for k, offset in enumerate(range(0, len(data), chunk)):
                time.sleep(max(0.0, began + k * CHUNK_SECONDS - time.monotonic()))
                ws.send(data[offset : offset + chunk])
                sent_at.append((min(offset + chunk, len(data)) / 2 / RATE, time.monotonic()))
            ws.send('{"type": "end"}')

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        events = []
        while True:
            event = json.loads(ws.recv(timeout=30))
            event["received"] = time.monotonic()
            events.append(event)
            if event["type"] in ("end", "error"):
                break
        sender.join(10)
    lags = []
    for event in events:
        if event["type"] == "window":
            # The message that completed this window: the first whose audio reaches its end.
            when = next(t for seconds, t in sent_at if seconds >= event["end"] - 1e-6)
            lags.append(event["received"] - when)
    out["events"] = events
    out["detections"] = [
        (e["label"], e["start"], e["end"]) for e in events if e["type"] == "detection"
    ]
    out["lags"] = lags


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    with run_server(
        tmp_path_factory.mktemp("scenes"), models=EMBEDDED_MODEL_DIR, intra_op_threads=1
    ) as server:
        yield server


def test_recorded_keywords_over_room_noise_are_detected_live(
    default_server: ServerProcess,
) -> None:
    scenes = build_scenes(RECORDINGS, SCENES, split="test", seed=3)
    results: list[dict] = [{} for _ in scenes]
    threads = [
        threading.Thread(target=_stream, args=(default_server, scene, result), daemon=True)
        for scene, result in zip(scenes, results, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all("events" in r for r in results), "a stream did not finish"
    found = wrong = 0
    for scene, result in zip(scenes, results, strict=True):
        f, w = match_detections(scene.words, result["detections"])
        found, wrong = found + f, wrong + w
    said = sum(len(s.words) for s in scenes)
    minutes = sum(s.seconds for s in scenes) / 60
    lags = 1000 * np.concatenate([r["lags"] for r in results])
    p50, p99 = np.percentile(lags, [50, 99])
    report = f"detected {found}/{said}, wrong {wrong} in {minutes:.1f} min, lag p50 {p50:.0f} ms"
    report += f" p99 {p99:.0f} ms"
    assert found / said >= DETECTED, report
    assert wrong / minutes <= WRONG_PER_MINUTE, report
    assert p99 <= 100, report
