"""k8s/: the manifests pass the Kubernetes schemas (kubernetes-validate, strict, offline), and
their probes, drain timing, ports and security context agree with the server's real settings,
routes and the serving image."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient

from arinext.service.app import create_app
from tests.deploy.conftest import REPO, parse_service_environment
from tests.deploy.dockerfile import Dockerfile, duration_seconds

K8S = REPO / "k8s"
# The oldest Kubernetes the manifests are written for (autoscaling/v2 HPA behaviour, policy/v1
# PDB, seccompProfile) and the newest schema bundled with the validator.
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
# Headroom in the grace period for the slowest request still in flight once the drain ends.
IN_FLIGHT_SECONDS = 20


def _resources() -> dict[str, dict]:
    """``kind`` -> resource, from every file that kustomization.yaml lists."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    resources = {}
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")):
            resources[document["kind"]] = document
    return resources


RESOURCES = _resources()


@pytest.fixture(scope="module")
def pod() -> dict:
    return RESOURCES["Deployment"]["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod: dict) -> dict:
    (api,) = pod["containers"]
    return api


@pytest.fixture(scope="module")
def environment(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= set(
        RESOURCES
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kind", sorted(RESOURCES))
def test_manifest_passes_the_kubernetes_schema(kind: str, version: str) -> None:
    kubernetes_validate.validate(RESOURCES[kind], version, strict=True)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "template", "spec", "containers", 0, "readinessProb"), {}),
        (("spec", "replicas"), "two"),
        (("spec", "template", "spec", "containers", 0, "ports", 0), {"name": "http"}),
    ],
    ids=["unknown-field", "wrong-type", "missing-required"],
)
def test_the_schema_check_rejects_a_broken_deployment(path: tuple, value: object) -> None:
    broken = copy.deepcopy(RESOURCES["Deployment"])
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_selectors_match_the_pods() -> None:
    labels = RESOURCES["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selectors = [
        RESOURCES["Deployment"]["spec"]["selector"]["matchLabels"],
        RESOURCES["Service"]["spec"]["selector"],
        RESOURCES["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= labels.items(), selector
    target = RESOURCES["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (
        "Deployment",
        RESOURCES["Deployment"]["metadata"]["name"],
    )
    # Disruptions may take a replica only while another one is left.
    assert RESOURCES["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2
    assert RESOURCES["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_environment_is_valid_service_settings_and_ports_agree(
    container: dict, environment: dict[str, str], pod: dict
) -> None:
    settings = parse_service_environment(environment)
    (port,) = container["ports"]
    assert port["containerPort"] == settings.port
    assert settings.host == "0.0.0.0"
    service_port = RESOURCES["Service"]["spec"]["ports"][0]
    assert service_port["targetPort"] == port["name"]
    annotations = RESOURCES["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == settings.port
    # ONNX Runtime threads: one per CPU of the limit, not per core of the node.
    assert settings.intra_op_threads == int(container["resources"]["limits"]["cpu"])
    # The API-only image has no Gradio: the demo must be off.
    assert settings.demo is False


def test_probes_and_scrape_path_are_real_routes(container: dict) -> None:
    app = create_app(parse_service_environment({"ARINEXT_DEMO": "false"}))
    client = TestClient(app)  # no lifespan: nothing loads, but every route answers

    def routed(path: str) -> bool:
        return client.get(path).status_code != 404

    assert not routed("/no-such-probe")
    annotations = RESOURCES["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert routed(annotations["prometheus.io/path"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert routed(container[probe]["httpGet"]["path"]), probe
        assert container[probe]["httpGet"]["port"] == container["ports"][0]["name"]
        assert container[probe]["timeoutSeconds"] < container[probe]["periodSeconds"]


def _window(probe: dict) -> int:
    return probe["periodSeconds"] * probe["failureThreshold"]


def test_drain_timing_matches_the_server(
    container: dict, environment: dict[str, str], pod: dict
) -> None:
    settings = parse_service_environment(environment)
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    pre_stop_seconds = float(pre_stop[1])
    # The readiness probe sees the drain (/readyz 503) before the server stops answering it.
    assert _window(container["readinessProbe"]) <= settings.drain_seconds
    # Liveness must not kill a replica that is only draining.
    assert _window(container["livenessProbe"]) > settings.drain_seconds
    # SIGTERM comes after preStop; then the drain, then in-flight requests, all within the grace.
    needed = pre_stop_seconds + settings.drain_seconds + IN_FLIGHT_SECONDS
    grace = pod["terminationGracePeriodSeconds"]
    assert needed <= grace <= needed + 30, (needed, grace)


def test_startup_allows_the_image_start_period(container: dict) -> None:
    healthcheck = Dockerfile(REPO / "docker" / "serve.Dockerfile").final.last("HEALTHCHECK")
    start_period = duration_seconds(healthcheck.flags["start-period"])
    assert _window(container["startupProbe"]) >= math.ceil(start_period)


def test_security_context_matches_the_image(pod: dict, container: dict) -> None:
    final = Dockerfile(REPO / "docker" / "serve.Dockerfile").final
    uid, _, gid = final.last("USER").args.partition(":")
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert pod["securityContext"]["runAsGroup"] == int(gid)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "add" not in context["capabilities"]
    # The only writable path is the image's TMPDIR (also its HOME and caches), in memory.
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == final.env["TMPDIR"]
    (volume,) = pod["volumes"]
    assert volume["name"] == mount["name"] and volume["emptyDir"]["medium"] == "Memory"
    for name in ("HOME", "XDG_CACHE_HOME", "GRADIO_TEMP_DIR"):
        assert Path(final.env[name]).is_relative_to(mount["mountPath"]), name


def test_resources_are_bounded(container: dict) -> None:
    resources = container["resources"]
    assert set(resources) == {"requests", "limits"}
    for key in ("cpu", "memory"):
        assert key in resources["requests"] and key in resources["limits"], key
