"""Prometheus metrics: exact names and labels, reconciliation, and a real Prometheus scrape."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.service.audio import encode_sf, signal
from tests.service.conftest import free_port, isolated_settings, serve_in_process, stop_process

WAV = {"content-type": "audio/wav"}
CLIP = encode_sf(signal(2.5, 16000), 16000, "WAV", "PCM_16")

# Family name (as the parser reports it, without _total) -> label names.
CONTRACT: dict[str, set[str]] = {
    "arinext_requests_received": {"endpoint"},
    "arinext_requests": {"endpoint", "status"},
    "arinext_request_duration_seconds": {"endpoint"},
    "arinext_head_request_duration_seconds": {"head"},
    "arinext_stage_duration_seconds": {"stage"},
    "arinext_batch_size": {"model"},
    "arinext_queue_depth": {"model"},
    "arinext_audio_duration_seconds": set(),
    "arinext_rejections": {"reason"},
    "arinext_model_info": {"model", "head", "sha256"},
    "arinext_ready": set(),
}


def _mix(client: TestClient | httpx.Client) -> dict[tuple[str, str], int]:
    """A mix of good and bad requests; returns the expected count per (endpoint, status)."""
    expected: dict[tuple[str, str], int] = defaultdict(int)
    calls = [
        (lambda: client.post("/classify", content=CLIP, headers=WAV), "/classify", 200),
        (
            lambda: client.post("/classify?windows=true", content=CLIP, headers=WAV),
            "/classify",
            200,
        ),
        (lambda: client.post("/classify", content=b"nope", headers=WAV), "/classify", 415),
        (lambda: client.post("/classify?top_k=0", content=CLIP, headers=WAV), "/classify", 422),
        (lambda: client.post("/classify?heads=x", content=CLIP, headers=WAV), "/classify", 404),
        (lambda: client.post("/classify", content=b"", headers=WAV), "/classify", 400),
        (lambda: client.get("/models"), "/models", 200),
        (lambda: client.get("/healthz"), "/healthz", 200),
        (lambda: client.get("/no/such/path"), "unmatched", 404),
    ]
    for call, endpoint, status in calls:
        assert call().status_code == status
        expected[(endpoint, str(status))] += 1
    return expected


def _samples(text: str) -> dict[str, list]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_metric_names_labels_and_reconciliation(speech_artifact: Path) -> None:
    with serve_in_process(isolated_settings(models=[speech_artifact])) as client:
        expected = _mix(client)
        families = _samples(client.get("/metrics").text)
    for name, labels in CONTRACT.items():
        assert name in families, name
        for sample in families[name]:
            if not sample.name.endswith(("_created", "_bucket")):
                assert set(sample.labels) == labels, (name, sample.labels)

    answered = {
        (s.labels["endpoint"], s.labels["status"]): s.value
        for s in families["arinext_requests"]
        if s.name == "arinext_requests_total"
    }
    for key, count in expected.items():
        assert answered[key] == count, key
    received = {
        s.labels["endpoint"]: s.value
        for s in families["arinext_requests_received"]
        if s.name == "arinext_requests_received_total"
    }
    for endpoint, count in received.items():
        assert count == sum(v for (e, _), v in answered.items() if e == endpoint), endpoint
    assert "/metrics" not in received  # a scrape is never counted while it is in flight

    def value(family: str, name: str, **labels: str) -> float:
        return next(
            s.value
            for s in families[family]
            if s.name == name and s.labels.items() >= labels.items()
        )

    for stage in ("decode", "resample", "features", "queue", "inference"):
        count = value(
            "arinext_stage_duration_seconds", "arinext_stage_duration_seconds_count", stage=stage
        )
        assert count >= 2, stage
    assert value("arinext_rejections", "arinext_rejections_total", reason="unsupported_media") == 1
    assert value("arinext_rejections", "arinext_rejections_total", reason="bad_audio") == 1
    assert value("arinext_rejections", "arinext_rejections_total", reason="bad_request") == 2
    assert value("arinext_audio_duration_seconds", "arinext_audio_duration_seconds_sum") == 5.0
    assert value("arinext_ready", "arinext_ready") == 1
    assert (
        value(
            "arinext_head_request_duration_seconds",
            "arinext_head_request_duration_seconds_count",
            head="speech_commands",
        )
        == 2
    )
    info = [s for s in families["arinext_model_info"] if s.name == "arinext_model_info"]
    assert [(s.labels["model"], s.labels["head"], s.value) for s in info] == [
        ("tiny-speech-commands", "speech_commands", 1.0)
    ]


@pytest.mark.system
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) missing")
def test_promtool_accepts_the_exposition(speech_artifact: Path) -> None:
    with serve_in_process(isolated_settings(models=[speech_artifact])) as client:
        _mix(client)
        text = client.get("/metrics").text
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    # promtool exits 3 for lint notes such as "counter should have _total"; 1 is a parse error.
    assert result.returncode in (0, 3), result.stdout + result.stderr
    assert "error" not in (result.stdout + result.stderr).lower()


class Prometheus:
    """A Prometheus server scraping one target every second, with an HTTP API query helper."""

    def __init__(self, tmp_path: Path, target: str) -> None:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: arinext\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = tmp_path / "prometheus.log"
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [
                    "/usr/bin/prometheus",
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    def query(self, promql: str) -> list[dict]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        response.raise_for_status()
        return response.json()["data"]["result"]

    def scalar(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.log.read_text()}")
            try:
                if check():
                    return
            except (httpx.TransportError, httpx.HTTPStatusError):
                pass  # still starting up
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log.read_text()[-3000:]}")


@pytest.mark.system
@pytest.mark.skipif(
    not Path("/usr/bin/prometheus").exists(), reason="/usr/bin/prometheus (Debian) missing"
)
def test_real_prometheus_scrapes_arinext_serve(
    server_factory: Callable, speech_artifact: Path, tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "arinext", "serve", "--no-demo"]
    with server_factory(command, models=speech_artifact) as server:
        prometheus = Prometheus(tmp_path, server.url.removeprefix("http://"))
        try:
            prometheus.wait_for(
                lambda: prometheus.scalar('up{job="arinext"}') == 1.0, "the first scrape"
            )
            with httpx.Client(base_url=server.url, timeout=30.0) as client:
                expected = _mix(client)
                exposed = _samples(client.get("/metrics").text)["arinext_requests"]
            # The harness's readiness probes are counted too, so wait for the server's own total.
            answered = sum(s.value for s in exposed if s.name == "arinext_requests_total")
            prometheus.wait_for(
                lambda: prometheus.scalar("sum(arinext_requests_total)") == answered,
                "a scrape after the requests",
            )
            reconciled = "sum(arinext_requests_received_total) - sum(arinext_requests_total)"
            assert prometheus.scalar(reconciled) == 0.0
            by_status = {
                (r["metric"]["endpoint"], r["metric"]["status"]): float(r["value"][1])
                for r in prometheus.query('arinext_requests_total{endpoint!="/readyz"}')
            }
            assert by_status == {key: float(n) for key, n in expected.items()}
            assert (
                prometheus.scalar('arinext_request_duration_seconds_count{endpoint="/classify"}')
                == 6.0
            )
            assert (
                prometheus.scalar(
                    'arinext_request_duration_seconds_bucket{endpoint="/classify",le="+Inf"}'
                )
                == 6.0
            )
            quantile = prometheus.scalar(
                "histogram_quantile(0.5, sum by (le) "
                '(arinext_request_duration_seconds_bucket{endpoint="/classify"}))'
            )
            assert quantile is not None and quantile > 0
            for stage in ("decode", "resample", "features", "queue", "inference"):
                assert (
                    prometheus.scalar(f'arinext_stage_duration_seconds_count{{stage="{stage}"}}')
                    or 0
                ) >= 2, stage
            assert prometheus.scalar("sum(arinext_batch_size_count)") >= 2
            assert (
                prometheus.scalar(
                    'arinext_head_request_duration_seconds_count{head="speech_commands"}'
                )
                == 2.0
            )
            assert prometheus.scalar("arinext_audio_duration_seconds_count") == 2.0
            assert prometheus.scalar('arinext_queue_depth{model="tiny-speech-commands"}') == 0.0
            assert prometheus.scalar('arinext_rejections_total{reason="bad_request"}') == 2.0
            assert prometheus.scalar("arinext_ready") == 1.0
            info = prometheus.query("arinext_model_info")
            assert [r["metric"]["head"] for r in info] == ["speech_commands"]
        finally:
            stop_process(prometheus.process)
