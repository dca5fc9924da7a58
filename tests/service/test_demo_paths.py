"""The demo's API reads only files it was given (issue 38, door 1), through a real server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.service import audio
from tests.service.probes import watch

CALL = "/demo/gradio_api/call"
FILE_META = {"_type": "gradio.FileData"}
GRADIO_ERROR = {"duration": 10, "visible": True, "title": "Error"}


def _file(path: str) -> dict[str, object]:
    return {"path": path, "meta": FILE_META}


def _result(client: httpx.Client, api: str, data: list[object]) -> tuple[str, object]:
    """Run a demo event through Gradio's REST API: its last event's name and data."""
    started = client.post(f"{CALL}/{api}", json={"data": data})
    assert started.status_code == 200, started.text
    stream = client.get(f"{CALL}/{api}/{started.json()['event_id']}")
    event, data_line = stream.text.strip().splitlines()[-2:]
    return event.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))


def test_server_paths_are_refused_before_any_read_or_copy(
    server_factory: Callable, speech_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    link = tmp_path / "innocent.wav"
    link.symlink_to("/etc/hostname")
    hostile = [
        "/etc/hostname",
        "/dev/zero",
        "/proc/self/environ",
        str(link),
        "../../../../../../etc/hostname",
        "http://127.0.0.1:9/clip.wav",
        "file:///etc/hostname",
        str(tmp_path),
    ]
    with (
        server_factory(models=speech_artifact, demo="true") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        with watch(server.url, server.process.pid) as seen:
            for path in hostile:
                for route, body in (
                    (f"{CALL}/run", {"data": [_file(path), ["speech_commands"]]}),
                    ("/demo/gradio_api/queue/join", {"data": [_file(path), []], "fn_index": 2}),
                    (f"{CALL}/run", {"data": [{"nested": [_file(path)]}]}),
                ):
                    refused = client.post(route, json=body)
                    assert refused.status_code == 403, (path, refused.text)
                    assert refused.json()["error"]["code"] == "file_not_allowed"
            deep = client.post(
                f"{CALL}/run",
                content=b'{"data":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                headers={"content-type": "application/json"},
            )
            assert deep.status_code == 400
        assert client.get("/classify").status_code == 405  # still serving
        # What an upload returns, and an example as Gradio shows it, are still accepted.
        clip = audio.encode_sf(audio.signal(1.0, 16000), 16000, "WAV", "PCM_16")
        uploaded = client.post("/demo/gradio_api/upload", files={"files": ("a.wav", clip)})
        assert uploaded.status_code == 200, uploaded.text
        # The heads' choices are filled on page load, so a bare API call has none to give:
        # the handler's own refusal shows that the file was accepted.
        no_heads = ("error", {"error": "Choose at least one head.", **GRADIO_ERROR})
        assert _result(client, "run", [_file(uploaded.json()[0]), []]) == no_heads
        event, loaded = _result(client, "load_example", [0])
        assert event == "complete", loaded
        example = loaded[0]  # type: ignore[index]
        example_path = example["value"]["path"] if "value" in example else example["path"]
        assert _result(client, "run", [_file(example_path), []]) == no_heads
    assert not seen.failures and seen.slowest_healthz < 0.1, seen
    assert seen.rss_growth_mb < 100, seen
    hostname = Path("/etc/hostname").read_bytes()
    copies = [p for p in cache.rglob("*") if p.is_file() and p.read_bytes() == hostname]
    assert copies == [], copies
