"""HTTP routers, one per resource: classify, models, health (liveness, readiness, metrics)."""
