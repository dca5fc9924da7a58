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
    substitute_args,
)

# The default model as served (int8); its fp32 source is copied into the build stage only.
DEFAULT_ARTIFACT = "artifacts/speech-commands-b0-int8"
FP32_ARTIFACT = "artifacts/speech-commands-b0"
# Where a read-only root filesystem still lets the service write (a tmpfs in docker-compose.yml).
WRITABLE_ENV = ("TMPDIR", "HOME", "MPLCONFIGDIR", "GRADIO_TEMP_DIR")


def _pip_installs(stage: Stage) -> list[str]:
    """The `pip install ...` commands of a stage's RUN instructions."""
    commands = []
    for run in stage.all("RUN"):
        commands += [c.strip() for c in re.split(r"&&|;", run.args) if "pip install" in c]
    return commands


def _copies(dockerfile: Dockerfile) -> list[tuple[Stage, list[str], str]]:
    """(stage, sources with ARG defaults filled in, destination) of every COPY from the build
    context."""
    copies = []
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            if "from" not in copy.flags:
                *sources, destination = copy.words
                copies.append((stage, [substitute_args(s, stage) for s in sources], destination))
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


def test_serve_image_installs_only_from_the_lock_and_never_torch(
    serve_dockerfile: Dockerfile,
) -> None:
    builder = serve_dockerfile.stages[0]
    assert builder.args["LOCK"] == "serve", "a plain build is the API-only image"
    installs = _pip_installs(builder)
    lock, project = installs
    assert "--require-hashes" in lock and "--no-deps" in lock
    assert substitute_args(lock, builder).endswith("-r requirements/serve.txt"), lock
    # The package on top, resolving nothing; the lock has no torch (tests/deploy/test_lock.py).
    assert project.endswith("--no-deps ."), project
    for command in installs:
        assert "torch" not in command and not re.search(r"\[(train|dev)", command), command
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert pyproject["scripts"]["arinext"] == "arinext.cli:main"


@pytest.mark.parametrize(("lock", "demo"), [("serve", "false"), ("demo", "true")])
def test_serve_image_variants_pair_the_lock_with_the_demo_setting(lock: str, demo: str) -> None:
    """`make image` and `make image-full` pass LOCK and ARINEXT_DEMO together."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    target = "image:" if lock == "serve" else "image-full:"
    recipe = makefile[makefile.index(f"\n{target}") :].split("\n\n", 1)[0]
    if lock == "serve":
        assert "--build-arg LOCK" not in recipe and "ARINEXT_DEMO" not in recipe
    else:
        assert f"--build-arg LOCK={lock}" in recipe and f"ARINEXT_DEMO={demo}" in recipe
    assert "$(SERVE_BUILD)" in recipe


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


def test_serve_image_address_comes_from_the_environment(serve_dockerfile: Dockerfile) -> None:
    """No --host/--port in CMD: ARINEXT_HOST/ARINEXT_PORT drive the server and the healthcheck."""
    final = serve_dockerfile.final
    assert final.last("ENTRYPOINT").exec_form == ["arinext", "serve"]
    assert final.last("CMD").exec_form == []
    settings = parse_service_environment(final.env)
    assert settings.host == "0.0.0.0"
    exposed = final.last("EXPOSE")
    assert exposed is not None and exposed.words == [str(settings.port)]
    assert settings.demo is False, "the API-only image has no Gradio"


# --- training image --------------------------------------------------------------------------


def test_train_image_uses_a_cuda_pytorch_base_and_the_train_lock(
    train_dockerfile: Dockerfile,
) -> None:
    base = train_dockerfile.final.base
    assert re.fullmatch(r"pytorch/pytorch:2\.\d+\.\d+-cuda12\.\d+-cudnn9-runtime", base), base
    lock, project = _pip_installs(train_dockerfile.final)
    assert "--require-hashes" in lock and lock.endswith("-r requirements/train.txt"), lock
    # torch comes with the base image (CUDA build, or the CPU base of `make image-train`): with
    # --no-deps, pip can never swap it for another one.
    assert "--no-deps" in lock and project.endswith("--no-deps ."), project


def test_torch_base_installs_the_locked_torch_alone() -> None:
    dockerfile = Dockerfile(REPO / "docker" / "torch-base.Dockerfile")
    (install,) = _pip_installs(dockerfile.final)
    assert "--require-hashes --no-deps" in install and "-r /tmp/torch.txt" in install
    copies = [c.words for c in dockerfile.final.all("COPY")]
    assert ["requirements/torch.txt", "/tmp/torch.txt"] in copies


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
        f"{FP32_ARTIFACT}/model.onnx",
        "pyproject.toml",
        "arinext/cli.py",
        "model/labels/speech_commands_v2.json",
        "service/__init__.py",
        "training/__init__.py",
        "docker/serve.Dockerfile",
        "docker/warm-up.py",
        "requirements/serve.txt",
        "README.md",
    ],
)
def test_dockerignore_keeps_in(dockerignore: DockerIgnore, path: str) -> None:
    assert not dockerignore.excludes(path)


@pytest.mark.parametrize("name", ["serve", "train", "torch-base"])
def test_copy_sources_are_in_the_build_context(dockerignore: DockerIgnore, name: str) -> None:
    dockerfile = Dockerfile(REPO / "docker" / f"{name}.Dockerfile")
    for found_in, sources, _ in _copies(dockerfile):
        stage = found_in.name or found_in.base
        for source in sources:
            assert not Path(source).is_absolute(), source
            assert not dockerignore.excludes(source.rstrip("/")), f"{stage}: {source} ignored"
            assert (REPO / source).exists(), f"{stage}: {source} missing"
