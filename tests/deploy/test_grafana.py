"""Grafana: the provisioned data source and dashboard provider, and a dashboard that shows what
the issue lists (requests/s, error rate, per-head latency quantiles, stages, batching, queue)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import REPO
from tests.deploy.promql import metric_names

GRAFANA = REPO / "docker" / "grafana"


def _yaml(relative: str) -> dict:
    return yaml.safe_load((GRAFANA / relative).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads((GRAFANA / "dashboards" / "arinext.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def datasource() -> dict:
    (source,) = _yaml("provisioning/datasources/prometheus.yml")["datasources"]
    return source


def _panels(dashboard: dict) -> list[dict]:
    """Every panel that queries (rows' children included)."""
    panels = []
    for panel in dashboard["panels"]:
        panels += [panel, *panel.get("panels", [])]
    return [p for p in panels if p["type"] != "row"]


def _exprs(panel: dict) -> list[str]:
    return [target["expr"] for target in panel["targets"]]


def test_datasource_is_the_compose_prometheus(datasource: dict) -> None:
    assert datasource["type"] == "prometheus"
    assert datasource["access"] == "proxy"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["uid"] and datasource["isDefault"] is True


def test_dashboard_provider_reads_files() -> None:
    (provider,) = _yaml("provisioning/dashboards/arinext.yml")["providers"]
    assert provider["type"] == "file"
    assert Path(provider["options"]["path"]).is_absolute()


def test_panels_query_the_provisioned_datasource(dashboard: dict, datasource: dict) -> None:
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    ids = [p["id"] for p in rows + _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert dashboard["uid"] and dashboard["title"]
    for panel in _panels(dashboard):
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] == datasource["uid"]


def test_panels_fit_the_grid(dashboard: dict) -> None:
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def _find(dashboard: dict, metric: str, pattern: str = "") -> list[str]:
    return [
        expr
        for panel in _panels(dashboard)
        for expr in _exprs(panel)
        if metric in metric_names(expr) and re.search(pattern, expr)
    ]


def test_dashboard_shows_traffic_and_errors(dashboard: dict) -> None:
    assert _find(dashboard, "arinext_requests_total", r"^sum by \(endpoint, status\) \(rate\(")
    assert _find(dashboard, "arinext_requests_total", r'status=~"5\.\."\}.*\s/\s')
    assert _find(dashboard, "arinext_rejections_total", r"by \(reason\)")


@pytest.mark.parametrize(
    ("metric", "by"),
    [
        ("arinext_request_duration_seconds", "endpoint"),
        ("arinext_head_request_duration_seconds", "head"),
    ],
)
def test_dashboard_shows_latency_quantiles(dashboard: dict, metric: str, by: str) -> None:
    for quantile in ("0.5", "0.95", "0.99"):
        assert _find(dashboard, metric, rf"histogram_quantile\({quantile}, sum by \({by}, le\)"), (
            f"{metric} p{quantile} by {by}"
        )


def test_dashboard_shows_stages_batching_and_queue(dashboard: dict) -> None:
    assert _find(dashboard, "arinext_stage_duration_seconds", r"by \(stage\)")
    assert _find(dashboard, "arinext_batch_size", r"by \(model\)")
    assert _find(dashboard, "arinext_queue_depth", r"by \(model\)")
    assert _find(dashboard, "arinext_ready")
    assert _find(dashboard, "arinext_model_info", r"by \(model, head, sha256\)")
