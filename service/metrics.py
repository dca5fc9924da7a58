"""Prometheus metrics of one app instance.

Names and labels are a contract: dashboards and alert rules are built on them. Each app gets its
own ``CollectorRegistry`` so that several apps in one process (tests) never share counters.
``arinext_requests_received_total`` is incremented when a request arrives and
``arinext_requests_total`` when its answer has been sent, so at any quiet moment the first equals
the second summed over ``status`` (``/metrics`` itself is not counted, or every scrape would be
in flight while it is measured).
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

__all__ = ["STAGES", "Metrics"]

STAGES = ("decode", "resample", "features", "queue", "inference")

_Metric = TypeVar("_Metric", bound=MetricWrapperBase)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_AUDIO_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class Metrics:
    """The service's collectors, registered in a private registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests_received = Counter(
            "arinext_requests_received_total",
            "HTTP requests that arrived, by route template",
            ["endpoint"],
            registry=r,
        )
        self.requests = Counter(
            "arinext_requests_total",
            "HTTP requests answered, by route template and status code",
            ["endpoint", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "arinext_request_duration_seconds",
            "Time from a request's arrival to the end of its answer",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.head_duration = Histogram(
            "arinext_head_request_duration_seconds",
            "Latency of classify requests, observed once per head answered",
            ["head"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_duration = Histogram(
            "arinext_stage_duration_seconds",
            "Time spent per pipeline stage (decode, resample, features, queue, inference)",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "arinext_batch_size",
            "Windows per ONNX Runtime call",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "arinext_queue_depth",
            "Windows admitted to a model's batcher and not yet finished",
            ["model"],
            registry=r,
        )
        self.audio_duration = Histogram(
            "arinext_audio_duration_seconds",
            "Decoded duration of classified clips",
            buckets=_AUDIO_BUCKETS,
            registry=r,
        )
        self.rejections = Counter(
            "arinext_rejections_total",
            "Requests refused, by reason",
            ["reason"],
            registry=r,
        )
        self.model_info = Gauge(
            "arinext_model_info",
            "Served heads (value 1), with their model and the sha256 of its ONNX file",
            ["model", "head", "sha256"],
            registry=r,
        )
        self.ready = Gauge(
            "arinext_ready", "1 when models are verified and warmed up and not draining", registry=r
        )
        # Children looked up once: ``labels()`` takes a lock and checks its arguments on every
        # call, and the request path would call it about ten times per request.
        self.stages = {stage: self.stage_duration.labels(stage=stage) for stage in STAGES}
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}

    def child(self, metric: _Metric, *values: str) -> _Metric:
        """``metric.labels(*values)``, looked up once per label values. ``values`` must be
        bounded (route templates, head names, status codes, rejection reasons), never a client's
        raw input."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found  # type: ignore[return-value]

    def render(self) -> bytes:
        """The exposition text for a scrape."""
        return generate_latest(self.registry)
