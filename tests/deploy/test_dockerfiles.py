"""Static checks of docker/serve.Dockerfile, docker/train.Dockerfile and .dockerignore.

No Docker engine runs here; test_serve_command.py runs the serving image's commands outside it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO, parse_service_environment
from tests.deploy.dockerfile import (
    Dockerfile,
    DockerIgnore,
    Stage,
    duration_seconds,
    healthcheck_command,
)
from tests.deploy.serve_only import serve_requirement_closure

DEFAULT_ARTIFACT = "artifacts/speech-commands-synth-b0"
# Where a read-only root filesystem still lets the service write (a tmpfs in docker-compose.yml).
WRITABLE_ENV = ("TMPDIR", "HOME", "MPLCONFIGDIR", "GRADIO_TEMP_DIR")


def _pip_installs(stage: Stage) -> list[str]:
    """The `pip install ...` commands of a stage's RUN instructions."""
    commands = []
    for run in stage.all("RUN"):
        commands += [c.strip() for c in re.split(r"&&|;", run.args) if "pip install" in c]
    return commands


def _copies(dockerfile: Dockerfile) -> list[tuple[str, list[str], str]]:
    """(stage name, sources, destination) of every COPY from the build context."""
    copies = []
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            if "from" not in copy.flags:
                *sources, destination = copy.words
                copies.append((stage.name or stage.base, sources, destination))
    return copies


# --- serving image ---------------------------------------------------------------------------


def test_serve_image_is_multi_stage_on_python_slim(serve_dockerfile: Dockerfile) -> None:
    stages = serve_dockerfile.stages
    assert len(stages) >= 2
    # The venv's interpreter is a link into the base image: builder and runtime must match.
    assert {stage.base for stage in stages} == {"python:3.11-slim"}
    final = serve_dockerfile.final
    venv_copies = [c for c in final.all("COPY") if c.flags.get("from") == stages[0].name]
    assert venv_copies, "the runtime stage must copy the venv from the builder"
    venv = venv_copies[0].words[-1]
    assert final.env["PATH"].startswith(f"{venv}/bin:")
    assert not _pip_installs(final), "install in the builder stage only"


def test_serve_image_installs_the_serve_extra_and_never_torch(serve_dockerfile: Dockerfile) -> None:
    installs = [c for stage in serve_dockerfile.stages for c in _pip_installs(stage)]
    assert any(".[serve]" in c for c in installs), installs
    for command in installs:
        assert "torch" not in command and not re.search(r"\[(train|dev)", command), command
    # Nor through a dependency of a dependency.
    closure = serve_requirement_closure(REPO / "pyproject.toml")
    assert "torch" not in closure and "onnx" not in closure
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["scripts"]["arinext"] == "arinext.cli:main"


def test_serve_image_runs_as_a_fixed_non_root_user(serve_dockerfile: Dockerfile) -> None:
    user = serve_dockerfile.final.last("USER")
    assert user is not None, "the runtime stage must switch user"
    uid, _, gid = user.args.partition(":")
    # Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
    assert uid.isdigit() and int(uid) >= 1000, user.args
    assert not gid or (gid.isdigit() and int(gid) != 0), user.args
    later = serve_dockerfile.final.instructions.index(user)
    assert not [i for i in serve_dockerfile.final.instructions[later:] if i.keyword == "RUN"]


def test_serve_image_writes_only_under_tmp(serve_dockerfile: Dockerfile) -> None:
    env = serve_dockerfile.final.env
    for name in WRITABLE_ENV:
        assert env.get(name, "").startswith("/tmp"), f"{name}={env.get(name)!r}"
    workdir = serve_dockerfile.final.last("WORKDIR")
    assert workdir is not None and workdir.args.startswith("/tmp")
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"


def test_serve_image_environment_is_valid_service_settings(serve_dockerfile: Dockerfile) -> None:
    env = serve_dockerfile.final.env
    settings = parse_service_environment(env)
    assert settings.port == int(env["ARINEXT_PORT"])
    assert [str(d) for d in settings.model_dirs()] == env["ARINEXT_MODELS"].split(",")


def test_serve_image_bakes_in_the_default_artifact(serve_dockerfile: Dockerfile) -> None:
    final = serve_dockerfile.final
    destinations = [
        copy.words[-1].rstrip("/")
        for copy in final.all("COPY")
        if any(src.rstrip("/") == DEFAULT_ARTIFACT for src in copy.words[:-1])
    ]
    assert destinations, f"no COPY of {DEFAULT_ARTIFACT} into the runtime stage"
    models = [d.rstrip("/") for d in final.env["ARINEXT_MODELS"].split(",")]
    assert destinations[0] in models


def test_serve_image_healthcheck_polls_healthz_with_python(serve_dockerfile: Dockerfile) -> None:
    healthcheck = serve_dockerfile.final.last("HEALTHCHECK")
    assert healthcheck is not None
    command = healthcheck_command(healthcheck)
    assert command[0] == "python", "slim has no curl or wget"
    assert "/healthz" in " ".join(command)
    # Docker counts failures only after the start period: it must cover loading and warm-up.
    assert duration_seconds(healthcheck.flags["start-period"]) >= 30
    assert duration_seconds(healthcheck.flags["timeout"]) < duration_seconds(
        healthcheck.flags["interval"]
    )


def test_serve_image_entrypoint_is_arinext_serve(serve_dockerfile: Dockerfile) -> None:
    final = serve_dockerfile.final
    assert final.last("ENTRYPOINT").exec_form == ["arinext", "serve"]
    command = final.last("CMD").exec_form
    assert command == ["--host", "0.0.0.0", "--port", "8000"]
    exposed = final.last("EXPOSE")
    assert exposed is not None and exposed.words == [command[command.index("--port") + 1]]
    assert final.env["ARINEXT_PORT"] == "8000", "the healthcheck reads the port from ARINEXT_PORT"


# --- training image --------------------------------------------------------------------------


def test_train_image_uses_a_cuda_pytorch_base_and_the_train_extra(
    train_dockerfile: Dockerfile,
) -> None:
    base = train_dockerfile.final.base
    assert re.fullmatch(r"pytorch/pytorch:2\.\d+\.\d+-cuda12\.\d+-cudnn9-runtime", base), base
    installs = _pip_installs(train_dockerfile.final)
    assert any(".[train]" in c for c in installs), installs
    # torch comes with the base image (CUDA build); pip must not swap it for another one.
    assert all("-c " in c for c in installs), installs


def test_train_image_entrypoint_is_arinext(train_dockerfile: Dockerfile) -> None:
    final = train_dockerfile.final
    assert final.last("ENTRYPOINT").exec_form == ["arinext"]
    user = final.last("USER")
    assert user is not None and not user.args.startswith(("root", "0"))


# --- build context ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerignore() -> DockerIgnore:
    return DockerIgnore(REPO / ".dockerignore")


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        ".venv-serve/bin/python",
        "runs/exp1/train.log",
        "data/speech_commands/yes/0.wav",
        "arinext/__pycache__/cli.cpython-311.pyc",
        ".pytest_cache/v/cache",
        ".ruff_cache/CACHEDIR.TAG",
        "arinext.egg-info/PKG-INFO",
    ],
)
def test_dockerignore_keeps_out(dockerignore: DockerIgnore, path: str) -> None:
    assert dockerignore.excludes(path)


@pytest.mark.parametrize(
    "path",
    [
        f"{DEFAULT_ARTIFACT}/model.onnx",
        f"{DEFAULT_ARTIFACT}/manifest.json",
        "pyproject.toml",
        "arinext/cli.py",
        "model/labels/speech_commands_v2.json",
        "service/__init__.py",
        "training/__init__.py",
        "docker/serve.Dockerfile",
    ],
)
def test_dockerignore_keeps_in(dockerignore: DockerIgnore, path: str) -> None:
    assert not dockerignore.excludes(path)


@pytest.mark.parametrize("name", ["serve", "train"])
def test_copy_sources_are_in_the_build_context(dockerignore: DockerIgnore, name: str) -> None:
    dockerfile = Dockerfile(REPO / "docker" / f"{name}.Dockerfile")
    for stage, sources, _ in _copies(dockerfile):
        for source in sources:
            assert not Path(source).is_absolute(), source
            assert not dockerignore.excludes(source.rstrip("/")), f"{stage}: {source} ignored"
            if source.rstrip("/") != DEFAULT_ARTIFACT:  # built by training, not in git
                assert (REPO / source).exists(), f"{stage}: {source} missing"
