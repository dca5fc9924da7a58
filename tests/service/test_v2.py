"""The Open Inference Protocol, spoken by the real ``tritonclient[http]`` to a real server process.

Probabilities are checked against ``POST /classify`` on the same server (BYTES and FP32 waveform
inputs) and against the ONNX model itself (FP32 log-mel input).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from arinext.model.audio_config import PRESETS, AudioConfig
from arinext.model.frontend import clip_view
from arinext.service.loading import load_model
from tests.service.audio import encode_av, encode_sf, signal
from tests.service.conftest import ServerProcess, isolated_settings, run_server, serve_in_process

httpclient = pytest.importorskip("tritonclient.http")
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException

NAME = "tiny-speech-commands"
HEAD = "speech_commands"
CFG = PRESETS["speech_commands"]
MAX_SECONDS = 8


@pytest.fixture(scope="module")
def server(
    speech_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with run_server(
        tmp_path_factory.mktemp("v2"), models=speech_artifact, max_duration_seconds=MAX_SECONDS
    ) as process:
        yield process


@pytest.fixture(scope="module")
def triton(server: ServerProcess) -> Iterator:
    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def _classify_probabilities(http: httpx.Client, data: bytes) -> np.ndarray:
    answer = http.post(
        "/classify",
        params={"top_k": len(CFG_LABELS)},
        content=data,
        headers={"content-type": "application/octet-stream"},
    )
    assert answer.status_code == 200, answer.text
    probs = np.zeros(len(CFG_LABELS))
    for scored in answer.json()["predictions"][0]["top_k"]:
        probs[scored["index"]] = scored["score"]
    return probs


CFG_LABELS = range(35)


def test_health_and_metadata(triton, http: httpx.Client) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready(NAME)
    assert not triton.is_model_ready("no-such-model")
    server = triton.get_server_metadata()
    assert server["name"] == "arinext" and "classification" in server["extensions"]
    meta = triton.get_model_metadata(NAME)
    assert meta["name"] == NAME and meta["versions"] == ["1"]
    assert {(i["name"], i["datatype"]) for i in meta["inputs"]} == {
        ("audio", "BYTES"),
        ("waveform", "FP32"),
        ("logmel", "FP32"),
    }
    logmel = next(i for i in meta["inputs"] if i["name"] == "logmel")
    assert logmel["shape"] == [-1, 1, CFG.num_frames, CFG.n_mels]
    frontend = logmel["parameters"]  # enough to compute the log-mels client-side
    assert AudioConfig.model_validate(frontend) == CFG.model_copy(update={"fmax": CFG.mel_fmax})
    assert frontend["fmax"] == CFG.sample_rate / 2
    # GET /models publishes the same resolved front-end, field for field.
    listed = http.get("/models").json()["heads"]
    assert [h["frontend"] for h in listed if h["model"] == NAME] == [frontend]
    assert meta["outputs"] == [{"name": HEAD, "datatype": "FP32", "shape": [-1, 35]}]
    assert triton.get_model_metadata(NAME, model_version="1")["name"] == NAME
    missing = http.get("/v2/models/no-such-model")
    assert missing.status_code == 404
    assert isinstance(missing.json()["error"], str) and "no-such-model" in missing.json()["error"]


def test_bytes_input_gives_classify_probabilities_and_classification_strings(
    triton, http: httpx.Client
) -> None:
    clips = [
        encode_sf(signal(2.7, 44_100, channels=2, seed=1), 44_100, "FLAC"),
        encode_av(signal(0.8, 48_000, seed=2), 48_000, "ogg", "libopus"),
    ]
    audio = httpclient.InferInput("audio", [2], "BYTES")
    audio.set_data_from_numpy(np.array(clips, dtype=object))
    result = triton.infer(NAME, [audio], outputs=[httpclient.InferRequestedOutput(HEAD)])
    probs = result.as_numpy(HEAD)
    assert probs.shape == (2, 35) and probs.dtype == np.float32
    for row, clip in zip(probs, clips, strict=True):
        np.testing.assert_allclose(row, _classify_probabilities(http, clip), atol=1e-5)

    top = httpclient.InferRequestedOutput(HEAD, class_count=3)
    strings = triton.infer(NAME, [audio], outputs=[top]).as_numpy(HEAD)
    assert strings.shape == (2, 3)
    for row, expected in zip(strings, probs, strict=True):
        parsed = [s.decode().split(":", 2) for s in row]
        assert [int(i) for _, i, _ in parsed] == list(np.argsort(-expected, kind="stable")[:3])
        for score, index, label in parsed:
            assert float(score) == pytest.approx(expected[int(index)], abs=1e-6)
            assert label == http.get("/models").json()["heads"][0]["labels"][int(index)]


def test_waveform_input_with_its_sample_rate(triton, http: httpx.Client) -> None:
    x = signal(3.3, 22_050, seed=4)[:, 0]
    waveform = httpclient.InferInput("waveform", [1, len(x)], "FP32")
    waveform.set_data_from_numpy(x[None])
    result = triton.infer(NAME, [waveform], parameters={"sample_rate": 22_050})
    expected = _classify_probabilities(http, encode_sf(x, 22_050, "WAV", "FLOAT"))
    np.testing.assert_allclose(result.as_numpy(HEAD)[0], expected, atol=1e-5)

    with pytest.raises(InferenceServerException, match="sample_rate"):
        triton.infer(NAME, [waveform])


def test_logmel_input_gives_each_windows_probabilities(triton, speech_artifact: Path) -> None:
    x = signal(3.0, CFG.sample_rate, seed=6)[:, 0]
    views = np.stack([clip_view(x, s, CFG) for s in (0, 8000, 16000)])[:, None]
    logmel = httpclient.InferInput("logmel", list(views.shape), "FP32")
    logmel.set_data_from_numpy(views)
    probs = triton.infer(NAME, [logmel]).as_numpy(HEAD)
    logits = load_model(speech_artifact).run(views)[HEAD].astype(np.float64)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, expected, atol=1e-6)


def test_plain_json_requests_and_errors_in_the_protocol_shape(http: httpx.Client) -> None:
    wav = encode_sf(signal(1.0, 16_000), 16_000, "WAV", "PCM_16")
    request = {
        "id": "r1",
        "inputs": [
            {
                "name": "audio",
                "shape": [1],
                "datatype": "BYTES",
                "data": [base64.b64encode(wav).decode()],
            }
        ],
        "outputs": [{"name": HEAD, "parameters": {"classification": 2}}],
    }
    answer = http.post(f"/v2/models/{NAME}/infer", json=request)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == "r1" and body["model_name"] == NAME
    (output,) = body["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [1, 2]
    assert len(output["data"]) == 2 and output["data"][0].count(":") >= 2

    too_long = np.zeros((1, 16_000 * (MAX_SECONDS + 1)), np.float32)
    cases = [
        ({"inputs": []}, 400, "exactly one input"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}, 400, "x"),
        (
            {"inputs": [{"name": "audio", "shape": [1], "datatype": "BYTES", "data": ["bm90"]}]},
            415,
            "unrecognised audio format",
        ),
        (
            {"inputs": [{"name": "logmel", "shape": [1, 1, 2, 2], "datatype": "FP32",
                         "data": [0, 0, 0, 0]}]},
            400,
            "logmel must be",
        ),
        (
            {
                "inputs": [
                    {"name": "waveform", "shape": list(too_long.shape), "datatype": "FP32",
                     "data": too_long.ravel().tolist(), "parameters": {"sample_rate": 16000}}
                ]
            },
            413,
            "longer than the limit",
        ),
    ]  # fmt: skip
    for request, status, message in cases:
        refused = http.post(f"/v2/models/{NAME}/infer", json=request)
        assert refused.status_code == status, refused.text
        assert isinstance(refused.json()["error"], str)
        assert message in refused.json()["error"]
    unknown = http.post("/v2/models/nope/infer", json=request)
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
    not_json = http.post(f"/v2/models/{NAME}/infer", content=b"\x00\x01")
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]


def test_requests_are_counted_and_batched_like_classify(http: httpx.Client) -> None:
    # Its own requests: under xdist's worksteal the module's other tests may run elsewhere.
    x = signal(1.0, 16_000, seed=7)[:, 0]
    too_long = np.zeros(16_000 * (MAX_SECONDS + 1), np.float32)
    for samples, status in ((x, 200), (too_long, 413)):
        request = {
            "inputs": [
                {
                    "name": "waveform",
                    "shape": [1, len(samples)],
                    "datatype": "FP32",
                    "data": samples.tolist(),
                    "parameters": {"sample_rate": 16000},
                }
            ]
        }
        answer = http.post(f"/v2/models/{NAME}/infer", json=request)
        assert answer.status_code == status, answer.text
    metrics = http.get("/metrics").text
    infer_lines = [
        line
        for line in metrics.splitlines()
        if line.startswith("arinext_requests_total") and "/v2/models/{name}/infer" in line
    ]
    assert any('status="200"' in line for line in infer_lines), infer_lines
    assert any('status="413"' in line for line in infer_lines), infer_lines
    assert 'arinext_rejections_total{reason="too_long"}' in metrics
    batches = [line for line in metrics.splitlines() if line.startswith("arinext_batch_size_count")]
    assert batches and float(batches[0].split()[-1]) > 0


def test_refusals_before_routing_have_the_protocol_shape_too(speech_artifact: Path) -> None:
    settings = isolated_settings(models=[speech_artifact], max_upload_bytes=1000)
    with serve_in_process(settings) as client:
        too_big = client.post(f"/v2/models/{NAME}/infer", content=b"{" + b" " * 2000 + b"}")
        assert too_big.status_code == 413
        assert isinstance(too_big.json()["error"], str)
        unknown = client.get("/v2/no/such/route")
        assert unknown.status_code == 404 and isinstance(unknown.json()["error"], str)
        classify = client.post("/classify", content=b"x" * 2000)
        assert classify.json()["error"]["code"] == "upload_too_large"  # /classify keeps its own
