"""k8s/predict/indexed-job.yaml: a valid Indexed Job whose pods split the corpus exactly.

Each pod's command line is expanded as the kubelet expands it (``$(VAR)`` from the container's
environment, with the completion index the Job controller gives the pod) and parsed by the real
``arinext`` parser; the pods' shards must be disjoint, cover every file, and write distinct files.
"""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from arinext.cli import build_parser
from arinext.service.predict_cli import select_shard
from arinext.service.settings import Settings
from tests.deploy.conftest import REPO

JOB = yaml.safe_load((REPO / "k8s" / "predict" / "indexed-job.yaml").read_text(encoding="utf-8"))
# backoffLimitPerIndex and the FailIndex action need Kubernetes 1.29 (beta, on by default).
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_job_passes_the_kubernetes_schema(version: str) -> None:
    kubernetes_validate.validate(JOB, version, strict=True)


def _pod_command(index: int) -> list[str]:
    (container,) = JOB["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert "JOB_COMPLETION_INDEX" in env  # declared, so that $(JOB_COMPLETION_INDEX) expands
    env["JOB_COMPLETION_INDEX"] = str(index)
    words = [*container["command"], *container["args"]]
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], word) for word in words]


def test_the_pods_split_the_corpus_into_disjoint_shards_that_cover_it() -> None:
    spec = JOB["spec"]
    assert spec["completionMode"] == "Indexed"
    shards = spec["completions"]
    assert spec["parallelism"] == shards
    files = [Path(f"/corpus/{i:04d}.wav") for i in range(1000)]
    seen: list[Path] = []
    outputs = set()
    for index in range(shards):
        command = _pod_command(index)
        assert command[:2] == ["arinext", "predict"]
        args = build_parser().parse_args(command[1:])
        assert args.shard == (index, shards)
        assert args.paths == ["/corpus"]
        outputs.add(args.output)
        seen += select_shard(files, *args.shard)
    assert sorted(seen) == files
    assert len(outputs) == shards


def test_the_environment_is_valid_service_settings() -> None:
    (container,) = JOB["spec"]["template"]["spec"]["containers"]
    arinext = {e["name"]: e["value"] for e in container["env"] if e["name"].startswith("ARINEXT_")}
    settings = Settings(**{k.removeprefix("ARINEXT_").lower(): v for k, v in arinext.items()})
    assert settings.intra_op_threads == int(container["resources"]["limits"]["cpu"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/corpus"]["readOnly"] and "/results" in mounts and "/tmp" in mounts
