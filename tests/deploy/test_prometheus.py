"""Prometheus: promtool accepts the config and rules, the alert unit tests pass, and every metric
the rules and the Grafana dashboard read is one the service exports."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import REPO, require_binary
from tests.deploy.promql import (
    ALWAYS_PRESENT_LABELS,
    METRICS,
    exposition_names,
    label_names,
    metric_names,
    recorded_names,
)

PROMETHEUS_DIR = REPO / "docker" / "prometheus"
DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "arinext.json"
# Grafana's variables, replaced by values PromQL accepts.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = require_binary("promtool")
    return subprocess.run(
        [binary, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def _rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    def panels(items: list[dict]) -> list[dict]:
        return [p for item in items for p in [item, *panels(item.get("panels", []))]]

    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", [])]


def _test_series() -> list[str]:
    tests = yaml.safe_load((PROMETHEUS_DIR / "rules_test.yml").read_text())["tests"]
    return [s["series"] for test in tests for s in test["input_series"]]


def _grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


EXPRESSIONS = {
    **{f"rule {r.get('alert') or r['record']}": r["expr"] for r in _rules()},
    **{f"dashboard {i}": e for i, e in enumerate(_dashboard_exprs())},
    **{f"rules_test {i}": s for i, s in enumerate(_test_series())},
}


@pytest.mark.system
def test_promtool_checks_the_config() -> None:
    result = _promtool("check", "config", PROMETHEUS_DIR / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.system
def test_promtool_checks_the_rules() -> None:
    result = _promtool("check", "rules", PROMETHEUS_DIR / "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.system
def test_alert_unit_tests_pass() -> None:
    result = _promtool("test", "rules", PROMETHEUS_DIR / "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.system
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool parses rule expressions: wrap every panel query in a recording rule.
    rules = [
        {"record": f"dashboard:query_{i}:check", "expr": _grafana_to_promql(expr)}
        for i, expr in enumerate(_dashboard_exprs())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_cover_latency_and_errors() -> None:
    alerts = {r["alert"]: r for r in _rules() if "alert" in r}
    exprs = " ".join(r["expr"] for r in _rules())
    assert "histogram_quantile(0.99" in exprs
    assert any("p99" in r["expr"] for r in alerts.values())
    assert any("error" in r["expr"] for r in alerts.values())
    for alert in alerts.values():
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"]


def test_recorded_series_are_defined() -> None:
    defined = {r["record"] for r in _rules() if "record" in r}
    for where, expr in EXPRESSIONS.items():
        assert recorded_names(expr) <= defined, where


@pytest.mark.parametrize("where", sorted(EXPRESSIONS))
def test_queries_use_contract_metrics_and_labels(where: str) -> None:
    expr = EXPRESSIONS[where]
    metrics = metric_names(expr)
    assert metrics <= set(METRICS), f"{where}: not exported: {metrics - set(METRICS)}"
    allowed = set(ALWAYS_PRESENT_LABELS)
    for name in metrics:
        allowed |= METRICS[name]
    for recorded in recorded_names(expr):  # level:metric:operations, the level names labels
        allowed |= set(recorded.split(":")[0].split("_"))
    unknown = label_names(expr) - allowed
    assert not unknown, f"{where}: labels {unknown} are not on {sorted(metrics)}"


def test_queries_cover_the_service_metrics() -> None:
    used = set().union(*(metric_names(e) for e in EXPRESSIONS.values()))
    missing = set(METRICS) - used
    assert not missing, f"neither alerted on nor shown: {missing}"


def test_used_metrics_are_exported_by_the_live_app(live_metrics_text: str) -> None:
    exported = exposition_names(live_metrics_text)
    used = set().union(*(metric_names(e) for e in EXPRESSIONS.values()))
    assert used <= exported, f"not in /metrics: {sorted(used - exported)}"


def test_contract_labels_match_the_live_app(live_metrics_text: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    checked = set()
    for family in text_string_to_metric_families(live_metrics_text):
        name = family.name + "_total" if family.type == "counter" else family.name
        labels = {k for sample in family.samples for k in sample.labels} - {"le"}
        if name in METRICS and family.samples:
            assert labels == METRICS[name], name
            checked.add(name)
    # The classification and the refusal must have produced every labelled series.
    assert {name for name, labels in METRICS.items() if labels} <= checked
