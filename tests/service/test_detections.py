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
MODEL = "speech-commands-synth-b0"
HEAD = "speech_commands"


@pytest.fixture(scope="module")
def recording() -> Recording:
    return keyword_recording(script=YES_STOP_GO)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with serve_in_process(isolated_settings(models=[EMBEDDED_MODEL_DIR])) as client:
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


def _v2(client: TestClient, data: bytes) -> list[dict]:
    body = {
        "inputs": [
            {
                "name": "audio",
                "shape": [1],
                "datatype": "BYTES",
                "data": [base64.b64encode(data).decode()],
            }
        ]
    }
    answer = client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    (clip,) = json.loads(output["parameters"]["detections"])
    return clip


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
