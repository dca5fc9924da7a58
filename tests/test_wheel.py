"""The wheel, installed with the ``serve`` extra into a fresh virtualenv outside the checkout.

A real ``pip install '.[serve]'`` downloads ~200 MB and takes minutes; ``make test`` cannot afford
that on every run. So the wheel is built once, installed with ``--no-deps`` into a new venv in a
temporary directory, and the venv is given *exactly* the ``serve`` closure: the distributions that
the wheel's own metadata requires for that extra (followed recursively, markers evaluated), linked
from the development venv. Nothing else is visible (no torch, no Gradio, no checkout on the
path), so a dependency missing from the ``serve`` extra, a file missing from the wheel or a path
into the checkout fails here as it would for a user.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement

from tests.service.audio import encode_sf, signal
from tests.service.conftest import free_port, stop_process

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = "speech-commands-b0"
_PIP = (sys.executable, "-m", "pip")
# What a path on the machine that built an artifact looks like.
_MACHINE_PATH = re.compile(r"(^|[\s'\"=])(/(home|root|work|tmp|Users|opt|srv|mnt)/|[A-Z]:\\)")


def _closure(requirements: list[str], extras: set[str]) -> set[str]:
    """Installed distributions needed by ``requirements`` (with ``extras``), recursively."""
    needed: set[str] = set()
    todo = [(Requirement(r), extras) for r in requirements]
    while todo:
        requirement, active = todo.pop()
        environment = [{"extra": e} for e in active or {""}]
        if requirement.marker and not any(requirement.marker.evaluate(e) for e in environment):
            continue
        name = requirement.name.lower().replace("_", "-")
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in needed:
            continue
        needed.add(key)
        dist = metadata.distribution(name)
        todo += [(Requirement(r), set(requirement.extras)) for r in dist.requires or []]
    return {key.partition("[")[0] for key in needed}


def _link_site(dists: set[str], target: Path) -> None:
    """Link every top-level file or folder of ``dists`` from this venv into ``target``."""
    site = Path(sysconfig.get_paths()["purelib"])
    target.mkdir()
    for name in dists:
        dist = metadata.distribution(name)
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            if (site / top).exists() and not (target / top).exists():
                (target / top).symlink_to(site / top)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [*_PIP, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("arinext-*.whl")
    return path


@pytest.fixture(scope="module")
def fresh_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [*_PIP, "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    with zipfile.ZipFile(wheel) as archive:
        info = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = Parser().parsestr(archive.read(info).decode()).get_all("Requires-Dist") or []
    dists = _closure(requires, {"serve"})
    assert "onnxruntime" in dists and "torch" not in dists and "gradio" not in dists
    _link_site(dists, root / "serve-closure")
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            text=True,
        ).strip()
    )
    (site / "serve-closure.pth").write_text(str(root / "serve-closure") + "\n")
    return venv


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run(
        [str(venv / "bin" / "arinext"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory with no checkout in sight."""
    assert REPO not in tmp_path.parents
    return tmp_path


def test_the_wheel_carries_the_default_model_without_machine_paths(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        shipped = {
            f"arinext/service/{folder}/{name}"
            for folder in ("default_model", "default_model_fp32")
            for name in ("model.onnx", "manifest.json")
        }
        assert shipped <= names
        manifest = archive.read("arinext/service/default_model/manifest.json").decode()
        fp32 = json.loads(archive.read("arinext/service/default_model_fp32/manifest.json"))
    # Served: the int8 version; beside it the fp32 one it was quantised from (the keyword backbone).
    assert json.loads(manifest)["name"] == DEFAULT_MODEL
    assert json.loads(manifest)["precision"] == "int8" and fp32["precision"] == "fp32"
    assert json.loads(manifest)["quantization"]["source_sha256"] == fp32["sha256"]
    for shipped in [manifest, *(p.read_text() for p in REPO.glob("artifacts/*/manifest.json"))]:
        assert not _MACHINE_PATH.search(shipped), _MACHINE_PATH.search(shipped)


def test_the_wheel_installs_one_namespace(wheel: Path, fresh_venv: Path, outside: Path) -> None:
    """``arinext`` and nothing else: no top-level ``model``, ``service`` or ``training``."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert archive.read(top_level).decode().split() == ["arinext"]
    assert {name.split("/")[0] for name in names} == {"arinext", "arinext-0.1.0.dist-info"}
    assert {f"arinext/{p}/__init__.py" for p in ("model", "service", "training")} <= set(names)
    probe = (
        "import importlib.util as u; "
        "print([m for m in ('arinext', 'arinext.service.pipeline', 'model', 'service', 'training')"
        " if u.find_spec(m)])"
    )
    python = str(fresh_venv / "bin" / "python")
    found = subprocess.run(
        [python, "-I", "-c", probe], cwd=outside, capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "['arinext', 'arinext.service.pipeline']", found.stdout


def test_the_wheel_carries_the_training_recipes(
    wheel: Path, fresh_venv: Path, outside: Path
) -> None:
    """The recipes are YAML beside ``arinext.training.recipes``: the installed package finds
    them there, not in a checkout."""
    configs = REPO / "training" / "configs"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {f"arinext/training/configs/{p.name}" for p in configs.glob("*.yaml")} <= names
    probe = "from arinext.training.recipes import preset_names; print(preset_names())"
    python = str(fresh_venv / "bin" / "python")
    found = subprocess.run(
        [python, "-I", "-c", probe], cwd=outside, capture_output=True, text=True, check=True
    )
    shipped = sorted(p.stem for p in configs.glob("*.yaml") if not p.name.startswith("_"))
    assert found.stdout.strip() == str(shipped), found.stdout


def test_version_predict_and_the_train_commands_message(fresh_venv: Path, outside: Path) -> None:
    version = _run(fresh_venv, "--version", cwd=outside)
    assert version.returncode == 0 and version.stdout.strip() == "arinext 0.1.0"
    probe = _run(fresh_venv, "--help", cwd=outside)
    assert probe.returncode == 0 and "predict" in probe.stdout

    clip = outside / "clip.wav"
    clip.write_bytes(encode_sf(signal(1.5, 16_000), 16_000, "WAV", "PCM_16"))
    predicted = _run(fresh_venv, "predict", str(clip), "--jobs", "1", cwd=outside)
    assert predicted.returncode == 0, predicted.stderr
    (record,) = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert record["predictions"][0]["model"] == DEFAULT_MODEL

    for args in (["train", "--help"], ["import-checkpoint", "x.pyth", "--out", "a"], ["info"]):
        done = _run(fresh_venv, *args, cwd=outside)
        text = done.stdout + done.stderr
        assert "pip install 'arinext[train]'" in text, (args, text)
        assert "Traceback" not in text
        assert done.returncode == (0 if "--help" in args else 2), args


@pytest.fixture
def served(fresh_venv: Path, outside: Path) -> Iterator[str]:
    port = free_port()
    env = {"PATH": f"{fresh_venv / 'bin'}:/usr/bin:/bin", "HOME": str(outside)}
    log = (outside / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(fresh_venv / "bin" / "arinext"), "serve", "--port", str(port)],
        cwd=outside,
        env={**env, "ARINEXT_INTRA_OP_THREADS": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        stop_process(process)
        log.close()
        sys.stdout.write((outside / "serve.log").read_text(errors="replace")[-3000:])


def test_serve_serves_the_default_model(served: str) -> None:
    ready = httpx.get(f"{served}/readyz", timeout=5)
    assert ready.status_code == 200, ready.text
    heads = httpx.get(f"{served}/models", timeout=5).json()["heads"]
    assert [h["model"] for h in heads] == [DEFAULT_MODEL]
    wav = encode_sf(signal(1.0, 16_000), 16_000, "WAV", "PCM_16")
    answer = httpx.post(
        f"{served}/classify", content=wav, headers={"content-type": "audio/wav"}, timeout=30
    )
    assert answer.status_code == 200 and answer.json()["predictions"][0]["model"] == DEFAULT_MODEL
    home = httpx.get(f"{served}/", timeout=5, follow_redirects=True)  # no Gradio: the docs
    assert home.status_code == 200 and "swagger-ui" in home.text
