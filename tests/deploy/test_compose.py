"""docker-compose.yml: Debian's docker-compose accepts it, and the resolved services are the
hardened, observable stack the issue asks for."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import REPO, parse_service_environment, run_compose
from tests.deploy.dockerfile import Dockerfile, duration_seconds, healthcheck_command

pytestmark = pytest.mark.system


def _mounts(service: dict) -> dict[str, str]:
    """target -> source of a resolved service's bind mounts and volumes."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts[volume["target"]] = volume["source"]
        else:
            source, target, *_ = volume.split(":")
            mounts[target] = source
    return mounts


def _memory_bytes(text: str | int) -> int:
    units = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = str(text).lower().removesuffix("b") or "0"
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


@pytest.mark.parametrize("quiet", [False, True], ids=["config", "config-quiet"])
def test_docker_compose_accepts_the_file(quiet: bool) -> None:
    result = run_compose("config", *(["--quiet"] if quiet else []))
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    assert (result.stdout == "") == quiet


def test_services_and_profiles(compose_config: dict) -> None:
    services = compose_config["services"]
    assert set(services) == {"api", "prometheus", "grafana", "train"}
    # `docker compose up` starts the serving stack; the trainer only with --profile train.
    assert services["train"]["profiles"] == ["train"]
    for name in ("api", "prometheus", "grafana"):
        assert "profiles" not in services[name], name
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    assert services["api"]["build"]["dockerfile"] == "docker/serve.Dockerfile"
    # The full image (with the demo), as `make image-full` builds it.
    assert services["api"]["build"]["args"] == {"LOCK": "demo", "ARINEXT_DEMO": "true"}
    assert services["train"]["build"]["dockerfile"] == "docker/train.Dockerfile"
    for name in ("api", "train"):
        assert Path(services[name]["build"]["context"]) == REPO


def test_api_is_published_on_8000_and_health_checked(
    compose_config: dict, serve_dockerfile: Dockerfile
) -> None:
    api = compose_config["services"]["api"]
    assert {"published": 8000, "target": 8000} in [
        {k: int(v) for k, v in p.items() if k in ("published", "target")} for p in api["ports"]
    ]
    healthcheck = api["healthcheck"]
    assert healthcheck["test"][0] == "CMD"
    # The same probe as the image's HEALTHCHECK, and the same patience at start.
    image_healthcheck = serve_dockerfile.final.last("HEALTHCHECK")
    assert healthcheck["test"][1:] == healthcheck_command(image_healthcheck)
    assert duration_seconds(healthcheck["start_period"]) >= duration_seconds(
        image_healthcheck.flags["start-period"]
    )
    assert int(healthcheck["retries"]) >= 1


def test_api_is_hardened(compose_config: dict) -> None:
    api = compose_config["services"]["api"]
    assert api["read_only"] is True
    assert any(t.split(":")[0] == "/tmp" for t in api["tmpfs"]), api["tmpfs"]
    assert api["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in api["security_opt"]
    assert "privileged" not in api and "cap_add" not in api
    for name in ("prometheus", "grafana"):
        assert compose_config["services"][name]["cap_drop"] == ["ALL"], name


def test_api_has_resource_limits(compose_config: dict) -> None:
    limits = compose_config["services"]["api"]["deploy"]["resources"]["limits"]
    assert 0 < float(limits["cpus"]) <= 16
    assert (256 << 20) <= _memory_bytes(limits["memory"]) <= (64 << 30)


def test_api_environment_is_valid_service_settings(
    compose_config: dict, serve_dockerfile: Dockerfile
) -> None:
    api = compose_config["services"]["api"]
    environment = api["environment"]
    settings = parse_service_environment({**serve_dockerfile.final.env, **environment})
    assert [str(d) for d in settings.models] == environment["ARINEXT_MODELS"].split(",")
    assert environment["ARINEXT_MODELS"] == serve_dockerfile.final.env["ARINEXT_MODELS"]
    # ONNX Runtime would size its pool by the host's cores, not by the container's CPU limit.
    cpus = float(api["deploy"]["resources"]["limits"]["cpus"])
    assert 1 <= settings.intra_op_threads <= cpus
    # docker stop waits stop_grace_period before SIGKILL: draining must fit well inside it.
    assert duration_seconds(api["stop_grace_period"]) >= settings.drain_seconds + 10


def test_prometheus_scrapes_the_api(compose_config: dict) -> None:
    prometheus = compose_config["services"]["prometheus"]
    mounts = _mounts(prometheus)
    config_arg = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_path = Path(config_arg.split("=", 1)[1])
    assert Path(mounts[str(config_path.parent)]) == REPO / "docker" / "prometheus"
    scrape = yaml.safe_load((REPO / "docker/prometheus/prometheus.yml").read_text())
    targets = [
        target
        for job in scrape["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    ]
    api_port = compose_config["services"]["api"]["ports"][0]["target"]
    assert f"api:{api_port}" in targets


def test_grafana_mounts_provisioning_and_dashboards(compose_config: dict) -> None:
    mounts = _mounts(compose_config["services"]["grafana"])
    assert Path(mounts["/etc/grafana/provisioning"]) == REPO / "docker/grafana/provisioning"
    providers = yaml.safe_load(
        (REPO / "docker/grafana/provisioning/dashboards/arinext.yml").read_text()
    )["providers"]
    dashboards_path = providers[0]["options"]["path"]
    assert Path(mounts[dashboards_path]) == REPO / "docker/grafana/dashboards"
    home = compose_config["services"]["grafana"]["environment"]
    home_path = Path(home["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home_path.parent == Path(dashboards_path)
    assert (REPO / "docker/grafana/dashboards" / home_path.name).is_file()
    sources = yaml.safe_load(
        (REPO / "docker/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    assert sources[0]["url"] == "http://prometheus:9090"


def test_train_reserves_gpus_and_mounts_the_work_directories(compose_config: dict) -> None:
    train = compose_config["services"]["train"]
    devices = train["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices), devices
    sources = {Path(source) for source in _mounts(train).values()}
    assert {REPO / "data", REPO / "runs", REPO / "artifacts"} <= sources
