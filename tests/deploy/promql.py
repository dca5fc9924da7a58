"""The service's metrics contract, and what PromQL expressions (rules, dashboards) refer to.

Names are found with a regular expression rather than a PromQL parser: an ``arinext_...``
identifier not glued to a ``:`` is a metric (``endpoint:arinext_requests:rate5m`` is a recorded
series, checked separately). Histogram series suffixes are stripped to the metric's name.
"""

from __future__ import annotations

import re

__all__ = [
    "ALWAYS_PRESENT_LABELS",
    "METRICS",
    "exposition_names",
    "label_names",
    "metric_names",
    "recorded_names",
]

# name -> label names, as the service exports them (`le` of histograms aside).
METRICS: dict[str, frozenset[str]] = {
    "arinext_requests_received_total": frozenset({"endpoint"}),
    "arinext_requests_total": frozenset({"endpoint", "status"}),
    "arinext_request_duration_seconds": frozenset({"endpoint"}),
    "arinext_head_request_duration_seconds": frozenset({"head"}),
    "arinext_stage_duration_seconds": frozenset({"stage"}),
    "arinext_batch_size": frozenset({"model"}),
    "arinext_queue_depth": frozenset({"model"}),
    "arinext_audio_duration_seconds": frozenset(),
    "arinext_rejections_total": frozenset({"reason"}),
    "arinext_model_info": frozenset({"model", "head", "sha256"}),
    "arinext_ready": frozenset(),
}

# Added by Prometheus to every scraped series, and the bucket bound of histograms.
ALWAYS_PRESENT_LABELS = frozenset({"job", "instance", "le"})

_HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")
_METRIC = re.compile(r"(?<![\w:])(arinext_\w+)(?![\w:])")
_RECORDED = re.compile(r"(?<![\w:])([a-zA-Z_]\w*:[\w:]*\w)(?![\w:])")
_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def metric_names(expr: str) -> set[str]:
    """``arinext_*`` metrics an expression reads, histogram suffixes stripped."""
    names = set()
    for name in _METRIC.findall(_without_strings(expr)):
        base = _HISTOGRAM_SUFFIX.sub("", name)
        names.add(base if base in METRICS else name)
    return names


def recorded_names(expr: str) -> set[str]:
    """Recording-rule series (``level:metric:operations``) an expression reads."""
    return set(_RECORDED.findall(_without_strings(expr)))


def label_names(expr: str) -> set[str]:
    """Label names an expression matches on or groups by."""
    names = set(_MATCHER.findall(expr))
    for group in _GROUPING.findall(_without_strings(expr)):
        names.update(label.strip() for label in group.split(",") if label.strip())
    return names


def exposition_names(text: str) -> set[str]:
    """Metric names declared (``# TYPE``) in a Prometheus text exposition."""
    return {
        line.split()[2]
        for line in text.splitlines()
        if line.startswith("# TYPE ") and len(line.split()) >= 4
    }


def _without_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
