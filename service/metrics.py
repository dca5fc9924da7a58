"""Prometheus metrics of one app instance.

Names and labels are a contract: dashboards and alert rules are built on them. Each app gets its
own ``CollectorRegistry`` so that several apps in one process (tests) never share counters.
``arinext_requests_received_total`` is incremented when a request arrives and
``arinext_requests_total`` when its answer has been sent, so at any quiet moment the first equals
the second summed over ``status`` (``/metrics`` itself is not counted, or every scrape would be
in flight while it is measured).
"""

from __future__ import annotations

from fastapi import Request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["STAGES", "Metrics", "get_metrics"]

STAGES = ("decode", "resample", "features", "queue", "inference")

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
        self._heads: dict[str, Histogram] = {}
        self._endpoints: dict[str, tuple[Counter, Histogram]] = {}
        self._answers: dict[tuple[str, int], Counter] = {}
        self._rejections: dict[str, Counter] = {}

    def head(self, name: str) -> Histogram:
        """The ``arinext_head_request_duration_seconds`` child of head ``name``."""
        child = self._heads.get(name)
        if child is None:
            child = self._heads[name] = self.head_duration.labels(head=name)
        return child

    def endpoint(self, template: str) -> tuple[Counter, Histogram]:
        """The ``requests_received`` and ``request_duration`` children of a route template
        (templates are bounded: the routes' own, or ``unmatched``)."""
        children = self._endpoints.get(template)
        if children is None:
            children = self._endpoints[template] = (
                self.requests_received.labels(endpoint=template),
                self.request_duration.labels(endpoint=template),
            )
        return children

    def rejected(self, reason: str) -> Counter:
        """The ``arinext_rejections_total`` child of a reason (hot under a flood of refusals)."""
        child = self._rejections.get(reason)
        if child is None:
            child = self._rejections[reason] = self.rejections.labels(reason=reason)
        return child

    def answered(self, template: str, status: int) -> Counter:
        """The ``arinext_requests_total`` child of a route template and status code."""
        child = self._answers.get((template, status))
        if child is None:
            child = self._answers[template, status] = self.requests.labels(
                endpoint=template, status=str(status)
            )
        return child

    def render(self) -> bytes:
        """The exposition text for a scrape."""
        return generate_latest(self.registry)


def get_metrics(request: Request) -> Metrics:
    """Dependency: the running app's metrics."""
    return request.app.state.metrics
