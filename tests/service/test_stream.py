"""``WS /stream`` in process: the protocol, the same scores as /classify, and every refusal."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from arinext.model.audio_config import PRESETS
from arinext.service.errors import ApiError
from arinext.service.streams import session
from tests.service.audio import encode_av, signal
from tests.service.conftest import isolated_settings, serve_in_process

RATE = 16000
VIEW = PRESETS["speech_commands"].clip_samples


@pytest.fixture(scope="module")
def client(speech_artifact: Path) -> Iterator[TestClient]:
    settings = isolated_settings(
        models=[speech_artifact],
        stream_max_concurrent=2,
        stream_max_message_bytes=64_000,
        stream_max_speed=1000.0,  # the test client sends faster than real time
        stream_burst_seconds=1000.0,
        stream_idle_timeout_seconds=600.0,  # tested on a real server; a loaded machine is slow
    )
    with serve_in_process(settings) as client:
        yield client


def _start(**fields: Any) -> str:
    return json.dumps({"type": "start", "format": "s16le", "sample_rate": RATE, **fields})


def _until_close(ws: WebSocketTestSession) -> tuple[list[dict], int, str]:
    """Every event until the server closes, and the close code and reason."""
    events = []
    while True:
        try:
            events.append(ws.receive_json())
        except WebSocketDisconnect as closed:
            return events, closed.code, closed.reason


def _stream(client: TestClient, start: str, data: bytes, chunk: int = 3200) -> tuple[list, int]:
    with client.websocket_connect("/stream") as ws:
        ws.send_text(start)
        for i in range(0, len(data), chunk):
            ws.send_bytes(data[i : i + chunk])
        ws.send_text(json.dumps({"type": "end"}))
        events, code, _ = _until_close(ws)
    return events, code


def _pcm16(seconds: float, seed: int = 0) -> np.ndarray:
    return (signal(seconds, RATE, seed=seed)[:, 0] * 32767).astype("<i2")


def test_windows_every_hop_with_the_scores_classify_gives(client: TestClient) -> None:
    pcm = _pcm16(3.0)
    events, code = _stream(client, _start(hop=0.5, top_k=3), pcm.tobytes())
    assert code == 1000
    ready, *scored, end = events
    assert ready["type"] == "ready" and ready["heads"] == ["speech_commands"]
    assert ready["models"][0]["window"] == pytest.approx(1.023)
    windows = [e for e in scored if e["type"] == "window"]
    ends = [round(w["end"] * RATE) for w in windows]
    assert ends == [*range(VIEW, len(pcm) + 1, 8000), len(pcm)]
    assert end["type"] == "end" and end["windows"] == len(windows)
    assert end["audio_seconds"] == pytest.approx(3.0)
    for window in windows[:1] + windows[-1:]:
        a, b = round(window["start"] * RATE), round(window["end"] * RATE)
        wav = io.BytesIO()
        sf.write(wav, pcm[a:b], RATE, subtype="PCM_16", format="WAV")
        answer = client.post(
            "/classify?top_k=3", content=wav.getvalue(), headers={"content-type": "audio/wav"}
        ).json()
        expected = answer["predictions"][0]["top_k"]
        got = window["predictions"][0]["top_k"]
        assert [s["label"] for s in got] == [s["label"] for s in expected]
        assert [s["score"] for s in got] == pytest.approx([s["score"] for s in expected], abs=1e-5)


def test_f32_stereo_at_another_rate_and_webm_opus_are_scored(client: TestClient) -> None:
    x = signal(2.0, 44100, channels=2)
    events, code = _stream(
        client, _start(format="f32le", sample_rate=44100, channels=2), x.tobytes()
    )
    assert code == 1000 and events[-1]["audio_seconds"] == pytest.approx(2.0)
    webm = encode_av(signal(2.0, 48000), 48000, "webm", "libopus")
    events, code = _stream(client, _start(format="webm", sample_rate=None), webm, chunk=1000)
    assert code == 1000
    assert sum(e["type"] == "window" for e in events) == events[-1]["windows"] >= 4


def test_heads_and_top_k_are_chosen_by_the_client(client: TestClient) -> None:
    events, code = _stream(
        client, _start(heads=["speech_commands"], top_k=2), _pcm16(1.5).tobytes()
    )
    assert code == 1000
    assert all(len(e["predictions"][0]["top_k"]) == 2 for e in events if e["type"] == "window")
    with client.websocket_connect("/stream") as ws:
        ws.send_text(_start(heads=["verb"]))
        events, code, reason = _until_close(ws)
    assert code == 1008 and reason.startswith("invalid_start: unknown head")
    assert events == [
        {
            "type": "error",
            "error": {"code": "invalid_start", "message": events[0]["error"]["message"]},
        }
    ]


_OPUS_SILENCE = encode_av(np.zeros((20 * 48000, 1), np.float32), 48000, "webm", "libopus")


@pytest.mark.parametrize(
    ("first", "audio", "code", "reason"),
    [
        (b"\x00\x01garbage", b"", 1008, "invalid_start"),
        ("hello", b"", 1008, "invalid_start"),
        (json.dumps({"type": "start"}), b"", 1008, "invalid_start"),
        (_start(sample_rate=1_000_000), b"", 1008, "invalid_start"),
        (_start(format="mp3"), b"", 1008, "invalid_start"),
        (_start(hop=0.001), b"", 1008, "invalid_start"),
        (_start(votes=0), b"", 1008, "invalid_start"),
        (_start(votes=41), b"", 1008, "invalid_start"),
        (_start(format="f32le"), np.array([0.1, np.nan], "<f4").tobytes(), 1007, "invalid_audio"),
        (_start(format="f32le"), np.full(20000, 1e38, "<f4").tobytes(), 1007, "invalid_audio"),
        (_start(format="webm"), b"\x1a\x45\xdf\xa3" + b"junk" * 300, 1007, "invalid_audio"),
        (_start(), b"\x00" * 64_001, 1009, "message_too_big"),
        # 9.6 kB of Opus that decodes to 20 s: refused before it is all in memory.
        (_start(format="webm", sample_rate=None), _OPUS_SILENCE, 1009, "message_too_big"),
    ],
)
def test_bad_input_closes_the_stream_with_a_reason(
    client: TestClient, first: str | bytes, audio: bytes, code: int, reason: str
) -> None:
    with client.websocket_connect("/stream") as ws:
        if isinstance(first, bytes):
            ws.send_bytes(first)
        else:
            ws.send_text(first)
        if audio:
            step = 64_001 if len(audio) == 64_001 else 32_000
            for i in range(0, len(audio), step):
                ws.send_bytes(audio[i : i + step])
            ws.send_text(json.dumps({"type": "end"}))
        events, closed_with, text = _until_close(ws)
    assert closed_with == code
    assert text.startswith(f"{reason}: ")
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == reason
    assert (
        client.post(
            "/classify", content=_wav(0.5), headers={"content-type": "audio/wav"}
        ).status_code
        == 200
    )


def _wav(seconds: float) -> bytes:
    out = io.BytesIO()
    sf.write(out, _pcm16(seconds), RATE, subtype="PCM_16", format="WAV")
    return out.getvalue()


def test_text_other_than_end_after_start_is_refused(client: TestClient) -> None:
    with client.websocket_connect("/stream") as ws:
        ws.send_text(_start())
        assert ws.receive_json()["type"] == "ready"
        ws.send_text("more please")
        _, code, reason = _until_close(ws)
    assert code == 1008 and reason.startswith("invalid_message: ")


def test_streams_over_the_limit_are_refused_with_try_again_later(client: TestClient) -> None:
    with (
        client.websocket_connect("/stream") as first,
        client.websocket_connect("/stream") as second,
    ):
        for ws in (first, second):
            ws.send_text(_start())
            assert ws.receive_json()["type"] == "ready"
        with client.websocket_connect("/stream") as third:
            events, code, reason = _until_close(third)
        assert code == 1013 and reason.startswith("too_many_streams: 2 streams are open")
        assert events[0]["error"]["code"] == "too_many_streams"
        assert 'arinext_streams_total{reason="too_many_streams"}' in client.get("/metrics").text
        # Ended by the protocol: the test client cancels a server still waiting for messages.
        for ws in (first, second):
            ws.send_text(json.dumps({"type": "end"}))
            assert _until_close(ws)[1] == 1000
    # The slots are free again.
    events, code = _stream(client, _start(), _pcm16(1.0).tobytes())
    assert code == 1000


def test_windows_a_full_batcher_refuses_are_dropped_and_the_stream_goes_on(
    client: TestClient,
) -> None:
    batcher = client.app.state.models.batchers["tiny-speech-commands"]
    held = 0
    try:
        with pytest.raises(ApiError):  # fill the model's admission (by count or queue time)
            while held <= batcher.capacity:
                client.portal.call(batcher.reserve)
                held += 1
        with client.websocket_connect("/stream") as ws:
            ws.send_text(_start(hop=0.5))
            assert ws.receive_json()["type"] == "ready"
            ws.send_bytes(_pcm16(2.0).tobytes())
            ws.send_text(json.dumps({"type": "end"}))
            events, code, _ = _until_close(ws)
        assert code == 1000
        (dropped,) = [e for e in events if e["type"] == "dropped"]
        assert dropped["windows"] == 3 and dropped["start"] == 0.0 and dropped["end"] == 2.0
        assert events[-1]["type"] == "end" and events[-1]["dropped"] == 3
        assert not [e for e in events if e["type"] == "window"]
        metrics = client.get("/metrics").text
        assert 'arinext_stream_windows_dropped_total{reason="overloaded"}' in metrics
    finally:
        for _ in range(held):
            client.portal.call(batcher.cancel_reservation)


def test_stream_metrics(client: TestClient) -> None:
    _stream(client, _start(), _pcm16(1.5).tobytes())
    # And one refused stream of its own (xdist may run the module's other tests elsewhere).
    _, code = _stream(client, _start(format="f32le"), np.array([0.1, np.nan], "<f4").tobytes())
    assert code == 1007
    text = client.get("/metrics").text
    for line in (
        'arinext_streams_total{reason="completed"}',
        'arinext_stream_windows_total{model="tiny-speech-commands"}',
        "arinext_stream_audio_seconds_total",
        "arinext_stream_event_lag_seconds_count",
        "arinext_streams_active 0.0",
    ):
        assert line in text, line
    assert 'arinext_rejections_total{reason="invalid_audio"}' in text


def test_log_mels_are_computed_on_the_service_preparation_threads(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like /classify's: niced below the event loop and bounded, not on asyncio's default pool."""
    threads: list[str] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    real = session._timed_features
    monkeypatch.setattr(session, "_timed_features", recording)
    events, code = _stream(client, _start(hop=0.5), _pcm16(2.0).tobytes())
    assert code == 1000 and sum(e["type"] == "window" for e in events) == len(threads) == 3
    assert all(name.startswith("prepare") for name in threads), threads


def test_a_stream_open_while_the_service_stops_is_closed_going_away(
    speech_artifact: Path,
) -> None:
    """Its next window finds the preparation threads released: a 1001 ``shutting_down`` close
    (as uvicorn's own at shutdown), not an unhandled error."""
    settings = isolated_settings(
        models=[speech_artifact], stream_max_speed=1000.0, stream_burst_seconds=1000.0
    )
    with serve_in_process(settings) as client, client.websocket_connect("/stream") as ws:
        ws.send_text(_start())
        assert ws.receive_json()["type"] == "ready"
        client.portal.call(client.app.state.models.stop, 0.0)
        ws.send_bytes(_pcm16(1.5).tobytes())
        events, code, reason = _until_close(ws)
    assert code == 1001 and reason.startswith("shutting_down"), (code, reason, events)
    assert events[-1] == {
        "type": "error",
        "error": {"code": "shutting_down", "message": "the server is shutting down"},
    }


def test_windows_wait_for_company_only_while_other_streams_are_open_on_their_model(
    tiny_artifacts: dict[str, Path],
) -> None:
    """A batch hold of a minute: a lone stream's windows never wait for it, nor do they for a
    stream on another model; with a second stream open on theirs, they wait for company that does
    not come and are dropped as late (1 s) instead."""
    settings = isolated_settings(
        models=[tiny_artifacts["speech_commands"], tiny_artifacts["urbansound8k"]],
        stream_batch_hold_ms=60_000.0,
        max_queue_ms=0.0,  # no queue deadline to cut the hold short
        stream_max_lag_seconds=1.0,
        stream_max_speed=1000.0,
        stream_burst_seconds=1000.0,
        stream_idle_timeout_seconds=600.0,
    )
    pcm = _pcm16(2.0).tobytes()
    start = _start(hop=0.5, heads=["speech_commands"])
    late = 'arinext_stream_windows_dropped_total{reason="late"}'
    with serve_in_process(settings) as client:
        events, code = _stream(client, start, pcm)
        assert code == 1000 and [e["type"] for e in events].count("window") == 3
        with client.websocket_connect("/stream") as other:
            other.send_text(_start(hop=0.5, heads=["urbansound8k"]))
            assert other.receive_json()["type"] == "ready"
            events, code = _stream(client, start, pcm)
        assert code == 1000 and [e["type"] for e in events].count("window") == 3
        assert late not in client.get("/metrics").text
        with client.websocket_connect("/stream") as other:
            other.send_text(start)
            assert other.receive_json()["type"] == "ready"
            events, code = _stream(client, start, pcm)
        assert code == 1000 and not [e for e in events if e["type"] == "window"]
        assert [e for e in events if e["type"] == "dropped"]
        assert f"{late} 3.0" in client.get("/metrics").text
