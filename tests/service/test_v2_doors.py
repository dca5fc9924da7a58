"""/v2 holds like /classify (issue 38, doors 2 and 3), through a real server process.

Malformed JSON is a 400 naming the field, never a 500 (which would also close the keep-alive
connection); a batch the server could never admit is a 413 before any work. Throughout,
``/healthz`` answers within 100 ms and the RSS stays within 100 MB of where it started.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.audio import encode_sf, signal
from tests.service.conftest import ServerProcess, run_server
from tests.service.probes import watch

NAME = "tiny-speech-commands"
INFER = f"/v2/models/{NAME}/infer"
QUEUE_SIZE = 32
WAV = encode_sf(signal(1.0, 16_000), 16_000, "WAV", "PCM_16")


@pytest.fixture(scope="module")
def server(
    speech_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with run_server(
        tmp_path_factory.mktemp("v2-doors"), models=speech_artifact, queue_size=QUEUE_SIZE
    ) as process:
        yield process


def _audio(shape: object = (1,), **extra: object) -> dict[str, object]:
    data = [base64.b64encode(WAV).decode()]
    return {
        "inputs": [{"name": "audio", "datatype": "BYTES", "shape": shape, "data": data}],
        **extra,
    }


def _input(**spec: object) -> dict[str, object]:
    return {"inputs": [{"name": "audio", "datatype": "BYTES", "shape": [1], **spec}]}


def _waveform(**parameters: object) -> dict[str, object]:
    spec = {"name": "waveform", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}
    return {"inputs": [{**spec, "parameters": parameters}]}


def _encode(request: dict[str, object], *replace: tuple[bytes, bytes]) -> bytes:
    """JSON text of ``request``, with literal replacements (for what json.dumps cannot write)."""
    text = json.dumps(request).encode()
    for old, new in replace:
        assert old in text
        text = text.replace(old, new)
    return text


DEEP = 100_000
K_TRUE = [{"name": "speech_commands", "parameters": {"classification": True}}]
HUGE = [2**31 - 1, 2**31 - 1]
# Raw bodies: each is JSON text that Python's json module or the old parsing choked on.
MALFORMED: list[tuple[str, bytes]] = [
    ("parameters a list", _encode(_audio(parameters=[1]))),
    ("outputs[].name a list", _encode(_audio(outputs=[{"name": ["x"]}]))),
    ("outputs an object", _encode(_audio(outputs={"name": "x"}))),
    ("classification true", _encode(_audio(outputs=K_TRUE))),
    ("sample_rate 2^31", _encode(_waveform(sample_rate=2**31))),
    ("sample_rate Infinity", _encode(_waveform(sample_rate=1), (b": 1}", b": Infinity}"))),
    ("sample_rate NaN", _encode(_waveform(sample_rate=1), (b": 1}", b": NaN}"))),
    ("sample_rate a string", _encode(_waveform(sample_rate="16000"))),
    ("hop Infinity", _encode(_audio(parameters={"hop": 1}), (b": 1}", b": Infinity}"))),
    ("shape [true, 4]", _encode(_audio(shape=[True, 4]))),
    ("shape [2^32, 2^32]", _encode(_audio(shape=[2**32, 2**32]))),
    (
        "shape [2^31-1, 2^31-1]",
        _encode(_waveform(sample_rate=16_000), (b"[1, 4]", str(HUGE).encode())),
    ),
    ("a 5000-digit shape", _encode(_audio(), (b"[1]", b"[" + b"9" * 5000 + b"]"))),
    ("100k-deep data", _encode(_input(data=[7]), (b"[7]", b"[" * DEEP + b"]" * DEEP))),
    ("100k-deep body", b"[" * DEEP + b"]" * DEEP),
    ("a JSON list", b"[1]"),
    ("inputs [1]", b'{"inputs": [1]}'),
    ("id an object", _encode(_audio(id={"a": 1}))),
    ("ragged BYTES data", _encode(_input(shape=[2], data=[["a"], "b", ["c", ["d"]]]))),
    ("binary_data_size -1", _encode(_input(parameters={"binary_data_size": -1}))),
    ("FP32 data 1e999", _encode(_waveform(sample_rate=16_000), (b"[0, 0", b"[1e999, 0"))),
]


def test_malformed_requests_are_400s_naming_the_problem_and_keep_the_connection(
    server: ServerProcess,
) -> None:
    with (
        httpx.Client(base_url=server.url, timeout=30) as client,
        watch(server.url, server.process.pid) as seen,
    ):
        for what, body in MALFORMED:
            answer = client.post(INFER, content=body, headers={"content-type": "application/json"})
            assert answer.status_code in (400, 413), (what, answer.status_code, answer.text)
            assert isinstance(answer.json()["error"], str) and answer.json()["error"], what
            assert answer.headers.get("connection") != "close", what
        good = client.post(INFER, json=_audio())
        assert good.status_code == 200, good.text
    assert not seen.failures and seen.slowest_healthz < 0.1, seen
    assert seen.rss_growth_mb < 100, seen


def _binary_bytes_request(declared: int, elements: int) -> tuple[bytes, dict[str, str]]:
    """Triton's binary form: ``elements`` empty BYTES elements, the shape saying ``declared``."""
    blob = struct.pack("<I", 0) * elements
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "audio",
                    "datatype": "BYTES",
                    "shape": [declared],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        }
    ).encode()
    headers = {"inference-header-content-length": str(len(header))}
    return header + blob, headers


def test_a_batch_the_server_could_never_admit_is_a_413_before_any_work(
    server: ServerProcess,
) -> None:
    with (
        httpx.Client(base_url=server.url, timeout=30) as client,
        watch(server.url, server.process.pid) as seen,
    ):
        body, headers = _binary_bytes_request(300_000, 300_000)  # 1.2 MB
        assert len(body) > 1_200_000
        for _ in range(5):
            answer = client.post(INFER, content=body, headers=headers)
            assert answer.status_code == 413, answer.text
            assert str(QUEUE_SIZE) in answer.json()["error"]
            assert answer.elapsed.total_seconds() < 0.5
        # One over the queue: refused for good (413), not "try again" (503 + Retry-After).
        over = client.post(INFER, json=_audio(shape=[QUEUE_SIZE + 1]))
        assert over.status_code == 413 and "retry-after" not in over.headers
        # A shape that promises fewer elements than the data holds stops parsing at once.
        body, headers = _binary_bytes_request(2, 300_000)
        assert client.post(INFER, content=body, headers=headers).status_code == 400
        logmel = {"name": "logmel", "datatype": "FP32", "shape": [5000, 1, 2, 2], "data": [0]}
        assert client.post(INFER, json={"inputs": [logmel]}).status_code == 413
        metrics = client.get("/metrics").text
        assert 'arinext_rejections_total{reason="too_large"}' in metrics
    assert not seen.failures and seen.slowest_healthz < 0.1, seen
    assert seen.rss_growth_mb < 100, seen
