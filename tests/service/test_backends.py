"""ARINEXT_BACKEND and ARINEXT_PRECISION: OpenVINO serves what ONNX Runtime serves.

Scores must match ONNX Runtime's within the precision's tolerance (f32: float rounding; bf16: 8
significant bits), int8 artifacts are served by both, and a backend that cannot load keeps the
server not ready with the reason in the log. The service's own tests (formats, errors, overload,
metrics, readiness) are run once more on OpenVINO by the slow test at the end.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from arinext.model.backends import available_backends
from arinext.model.quantize import quantize_artifact
from tests.service.audio import encode_sf, signal
from tests.service.conftest import REPO, isolated_settings, serve_in_process

needs_openvino = pytest.mark.skipif(
    "openvino" not in available_backends(), reason="the openvino extra is not installed"
)
WAV = {"content-type": "audio/wav"}


def _window_scores(artifact: Path, **settings: object) -> np.ndarray:
    """Every window's probabilities of every label (3 windows of a 2.5 s clip, 1 s apart)."""
    clip = encode_sf(signal(2.5, 16000, seed=5), 16000, "WAV", "PCM_16")
    with serve_in_process(isolated_settings(models=[artifact], **settings)) as client:
        reply = client.post("/classify?windows=true&hop=1&top_k=50", content=clip, headers=WAV)
    assert reply.status_code == 200, reply.text
    (prediction,) = reply.json()["predictions"]
    rows = []
    for window in prediction["windows"]:
        row = np.zeros(len(window["top_k"]))
        for scored in window["top_k"]:
            row[scored["index"]] = scored["score"]
        rows.append(row)
    return np.array(rows)


@pytest.fixture(scope="module")
def int8_artifact(speech_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny speech model quantised on synthetic sounds (random weights: no agreement bar)."""
    out = tmp_path_factory.mktemp("int8") / "tiny-speech-int8"
    quantize_artifact(speech_artifact, out, calibration_clips=32, check_clips=32, min_agreement=0)
    return out


@needs_openvino
def test_openvino_f32_serves_the_scores_onnx_runtime_serves(speech_artifact: Path) -> None:
    reference = _window_scores(speech_artifact, backend="onnxruntime")
    served = _window_scores(speech_artifact, backend="openvino", precision="f32")
    assert reference.shape == served.shape == (3, 35)
    np.testing.assert_allclose(served, reference, atol=1e-5)


@needs_openvino
def test_openvino_default_precision_is_within_bfloat16_tolerance(speech_artifact: Path) -> None:
    reference = _window_scores(speech_artifact, backend="onnxruntime")
    served = _window_scores(speech_artifact, backend="openvino", precision="auto")
    # bf16 keeps 8 significant bits; a few roundings through the network move each probability
    # by well under 0.02 (and not at all where the CPU has no bf16 and auto means f32).
    np.testing.assert_allclose(served, reference, atol=0.02)


@needs_openvino
def test_an_int8_artifact_is_served_alike_by_both_backends(int8_artifact: Path) -> None:
    on_ort = _window_scores(int8_artifact, backend="onnxruntime")
    on_openvino = _window_scores(int8_artifact, backend="openvino")
    np.testing.assert_allclose(on_openvino, on_ort, atol=0.02)


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"backend": "openvino"}, "pip install 'arinext[openvino]'"),
        ({"backend": "onnxruntime", "precision": "bf16"}, "bf16 needs the openvino backend"),
    ],
)
def test_a_backend_that_cannot_load_keeps_the_server_not_ready_and_says_why(
    speech_artifact: Path,
    settings: dict[str, str],
    reason: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the extra were not installed
    with (
        caplog.at_level(logging.ERROR, logger="arinext.service"),
        serve_in_process(
            isolated_settings(models=[speech_artifact], **settings), ready=False
        ) as client,
    ):
        for _ in range(200):
            ready = client.get("/readyz")
            if ready.json()["status"] != "loading":
                break
            time.sleep(0.05)
        assert ready.status_code == 503 and ready.json()["status"] == "failed"
        clip = encode_sf(signal(1.0, 16000), 16000, "WAV", "PCM_16")
        assert client.post("/classify", content=clip, headers=WAV).status_code == 503
    assert reason in caplog.text and "not-ready" in caplog.text


@needs_openvino
@pytest.mark.slow
def test_the_service_tests_pass_on_openvino() -> None:
    """Formats, errors, overload, metrics and readiness, rerun with ARINEXT_BACKEND=openvino."""
    env = {**os.environ, "SERVICE_TEST_BACKEND": "openvino", "SERVICE_TEST_PRECISION": "f32"}
    files = ["test_classify.py", "test_batching.py", "test_metrics.py", "test_lifecycle.py"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + [str(REPO / "tests" / "service" / name) for name in files],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
