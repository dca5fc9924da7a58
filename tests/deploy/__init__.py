"""Deployment: container files, compose stack, Prometheus rules and Grafana dashboards."""
