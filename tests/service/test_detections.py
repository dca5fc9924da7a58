"""What was said, and when: the same detections from every entry point for a recording.

The embedded default model hears "yes ... stop ... go" (espeak-ng, made here) through
``POST /classify``, ``/v2``, the Python ``Classifier`` and ``arinext predict --format table``;
each reports exactly those three words, each within half a second of where it was said. Silence
and noise report none; a one-second "yes" reports one.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from arinext.service.errors import ApiError
from arinext.service.pipeline import Classifier
from arinext.service.settings import EMBEDDED_MODEL_DIR
from tests.service.conftest import REPO, isolated_settings, serve_in_process
from tests.service.speech import (
    SAMPLE_RATE,
    YES_STOP_GO,
    Recording,
    espeak_available,
    keyword_recording,
    say,
)

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(not espeak_available(), reason="espeak-ng (Debian) missing"),
]
MODEL = "speech-commands-b0"
HEAD = "speech_commands"


@pytest.fixture(scope="module")
def recording() -> Recording:
    return keyword_recording(script=YES_STOP_GO)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = isolated_settings(
        models=[EMBEDDED_MODEL_DIR],
        stream_max_speed=1000.0,  # the test client streams faster than real time
        stream_burst_seconds=1000.0,
    )
    with serve_in_process(settings) as client:
        yield client


def _wav(samples: np.ndarray) -> bytes:
    import io

    out = io.BytesIO()
    sf.write(out, samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return out.getvalue()


def _assert_heard_as_said(events: list[dict], recording: Recording) -> None:
    heard = [(e["label"], round((e["start"] + e["end"]) / 2, 2)) for e in events]
    assert [label for label, _ in heard] == [k.text for k in recording.keywords], heard
    for (_, at), word in zip(heard, recording.keywords, strict=True):
        assert word.start - 0.5 <= at <= word.end + 0.5, (heard, word)


def _classify(client: TestClient, data: bytes) -> list[dict]:
    answer = client.post("/classify", content=data, headers={"content-type": "audio/wav"})
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"][0]["detections"]


def _v2(client: TestClient, data: bytes, **parameters: object) -> list[dict]:
    body: dict = {
        "inputs": [
            {
                "name": "audio",
                "shape": [1],
                "datatype": "BYTES",
                "data": [base64.b64encode(data).decode()],
            }
        ],
        "parameters": parameters,
    }
    answer = client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    (clip,) = json.loads(output["parameters"]["detections"])
    return clip


def _stream(client: TestClient, recording: Recording, **start: object) -> tuple[dict, list[dict]]:
    """The ``ready`` event and the detections of the recording streamed in 100 ms messages."""
    pcm = (np.clip(recording.samples, -1, 1) * 32767).astype("<i2").tobytes()
    with client.websocket_connect("/stream") as ws:
        message = {"type": "start", "format": "s16le", "sample_rate": SAMPLE_RATE, **start}
        ws.send_text(json.dumps(message))
        ready = ws.receive_json()
        assert ready["type"] == "ready", ready
        for i in range(0, len(pcm), 3200):
            ws.send_bytes(pcm[i : i + 3200])
        ws.send_text(json.dumps({"type": "end"}))
        events = []
        while (event := ws.receive_json())["type"] != "end":
            events.append(event)
    return ready, [e for e in events if e["type"] == "detection"]


def test_every_entry_point_reports_the_three_words_where_they_were_said(
    client: TestClient, recording: Recording, tmp_path: Path
) -> None:
    data = recording.wav_bytes()
    _assert_heard_as_said(_classify(client, data), recording)
    _assert_heard_as_said(_v2(client, data), recording)
    answer = Classifier.from_artifacts(intra_op_threads=1)(
        recording.samples, sample_rate=SAMPLE_RATE
    )
    _assert_heard_as_said([e.model_dump() for e in answer.predictions[0].detections], recording)

    path = tmp_path / "yes-stop-go.wav"
    path.write_bytes(data)
    table = subprocess.run(
        [sys.executable, "-m", "arinext", "predict", str(path), "--format", "table", "--jobs", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert table.returncode == 0, table.stderr
    row = table.stdout.splitlines()[1]
    said = [f"{w.text} at " for w in recording.keywords]
    assert all(part in row for part in said), row
    times = [float(row.split(part)[1].split(" s")[0]) for part in said]
    for at, word in zip(times, recording.keywords, strict=True):
        assert word.start - 0.5 <= at <= word.end + 0.5, (row, word)


def test_silence_and_noise_report_nothing_and_one_yes_reports_one(client: TestClient) -> None:
    rng = np.random.default_rng(0)
    quiet = rng.normal(0, 1e-3, 5 * SAMPLE_RATE).astype(np.float32)
    noise = rng.normal(0, 0.1, 5 * SAMPLE_RATE).astype(np.float32)
    for clip in (quiet, noise):
        assert _classify(client, _wav(clip)) == []
        assert _v2(client, _wav(clip)) == []
    word = say("yes")
    one = np.zeros(SAMPLE_RATE, dtype=np.float32)
    offset = (SAMPLE_RATE - len(word)) // 2
    one[offset : offset + len(word)] = word
    (event,) = _classify(client, _wav(one))
    assert event["label"] == "yes" and (event["start"], event["end"]) == (0.0, 1.0)


def test_every_entry_point_takes_the_vote_count(
    client: TestClient, recording: Recording, tmp_path: Path
) -> None:
    # Forty votes are ten seconds of windows agreeing: no word of this recording gets them.
    data = recording.wav_bytes()
    answer = client.post("/classify?votes=40", content=data, headers={"content-type": "audio/wav"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["detections"] == []
    _assert_heard_as_said(
        client.post(
            "/classify?votes=2", content=data, headers={"content-type": "audio/wav"}
        ).json()["predictions"][0]["detections"],
        recording,
    )
    for bad in ("votes=0", "votes=41", "votes=two", "debounce=61", "threshold=0"):
        refused = client.post(
            f"/classify?{bad}", content=data, headers={"content-type": "audio/wav"}
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "invalid_parameter"
    assert _v2(client, data, votes=40) == []
    _assert_heard_as_said(_v2(client, data, votes=2), recording)
    for bad_votes in (0, 41, True, "2", 2.5):
        refused = client.post(
            f"/v2/models/{MODEL}/infer",
            json={
                "inputs": [{"name": "audio", "shape": [1], "datatype": "BYTES", "data": ["AA=="]}],
                "parameters": {"votes": bad_votes},
            },
        )
        assert refused.status_code == 400 and "votes" in refused.text, bad_votes
    classifier = Classifier.from_artifacts(intra_op_threads=1)
    answer = classifier(recording.samples, sample_rate=SAMPLE_RATE, votes=40)
    assert answer.predictions[0].detections == []
    for bad in (
        {"votes": 0},
        {"votes": 41},
        {"threshold": 0.0},
        {"threshold": 1.5},
        {"debounce": -1.0},
        {"debounce": 61.0},
    ):
        with pytest.raises(ApiError) as refused_call:
            classifier(recording.samples, sample_rate=SAMPLE_RATE, **bad)  # type: ignore[arg-type]
        assert (refused_call.value.status, refused_call.value.code) == (422, "invalid_parameter")

    path = tmp_path / "yes-stop-go.wav"
    path.write_bytes(data)
    command = [sys.executable, "-m", "arinext", "predict", str(path), "--jobs", "1"]
    run = subprocess.run([*command, "--votes", "40"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["predictions"][0]["detections"] == []
    run = subprocess.run([*command, "--votes", "0"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2 and "greater than or equal to 1" in run.stderr
    run = subprocess.run([*command, "--threshold", "1.5"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2 and "Input should be less than or equal to 1" in run.stderr
    run = subprocess.run([*command, "--debounce", "61"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2 and "less than or equal to 60" in run.stderr


def test_a_stream_takes_the_vote_count_and_says_so(
    client: TestClient, recording: Recording
) -> None:
    heard = {}
    for votes in (2, 40):
        ready, heard[votes] = _stream(client, recording, votes=votes)
        assert ready["votes"] == votes
    _assert_heard_as_said(heard[2], recording)
    assert heard[40] == []


@pytest.fixture(scope="module")
def tuned_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model with an operating point of forty votes in its manifest."""
    import shutil

    copy = tmp_path_factory.mktemp("tuned") / MODEL
    shutil.copytree(EMBEDDED_MODEL_DIR, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["detection"] = {"threshold": 0.5, "votes": 40, "tuned_on": "this test"}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_a_models_tuned_operating_point_is_every_entry_points_default(
    tuned_copy: Path, recording: Recording, tmp_path: Path
) -> None:
    """Forty votes from the manifest hear nothing; a request's own votes still win."""
    data = recording.wav_bytes()
    settings = isolated_settings(
        models=[tuned_copy], stream_max_speed=1000.0, stream_burst_seconds=1000.0
    )
    with serve_in_process(settings) as client:
        assert _classify(client, data) == []
        answer = client.post(
            "/classify?votes=2", content=data, headers={"content-type": "audio/wav"}
        )
        _assert_heard_as_said(answer.json()["predictions"][0]["detections"], recording)
        assert _v2(client, data) == []
        _assert_heard_as_said(_v2(client, data, votes=2), recording)
        ready, detections = _stream(client, recording)
        assert (ready["votes"], ready["threshold"]) == (40, 0.5)
        assert (ready["models"][0]["votes"], ready["models"][0]["threshold"]) == (40, 0.5)
        assert detections == []
    classifier = Classifier.from_artifacts([tuned_copy], intra_op_threads=1)
    assert classifier(recording.samples, sample_rate=SAMPLE_RATE).predictions[0].detections == []
    path = tmp_path / "yes-stop-go.wav"
    path.write_bytes(data)
    command = [sys.executable, "-m", "arinext", "predict", str(path), "--jobs", "1"]
    run = subprocess.run(
        [*command, "--models", str(tuned_copy)], capture_output=True, text=True, cwd=REPO
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["predictions"][0]["detections"] == []
