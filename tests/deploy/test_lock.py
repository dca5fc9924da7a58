"""requirements/: the lockfiles match pyproject.toml (a dependency changed without `make lock`
fails here), pin every package with hashes within pyproject's bounds, and are what the Makefile
installs."""

from __future__ import annotations

import importlib.util
import re
import shutil
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.conftest import REPO

_spec = importlib.util.spec_from_file_location("lock", REPO / "requirements" / "lock.py")
lock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock)

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.M)


def pins(name: str) -> dict[str, str]:
    """Canonical name -> pinned version of one lockfile."""
    text = (REPO / "requirements" / f"{name}.txt").read_text(encoding="utf-8")
    return {canonicalize_name(n): v for n, v in _PIN.findall(text)}


def requirements(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    texts = list(project["dependencies"])
    for extra in extras:
        texts += project["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


def test_every_lock_matches_pyproject() -> None:
    assert lock.stale_locks() == [], "dependencies changed without re-locking: run `make lock`"


@pytest.mark.parametrize(
    ("section", "stale"),
    [
        ("dependencies", {"dev", "serve", "demo", "train"}),
        ("train", {"dev", "train"}),
        ("demo", {"dev", "demo"}),
    ],
)
def test_a_dependency_changed_without_relocking_is_caught(
    tmp_path: Path, section: str, stale: set[str]
) -> None:
    for name in lock.LOCKS:
        shutil.copy(REPO / "requirements" / f"{name}.txt", tmp_path)
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    header = "dependencies = [" if section == "dependencies" else f"{section} = ["
    assert text.count(header) == 1, header
    changed = text.replace(header, f'{header}\n    "six>=1.16",', 1)
    (tmp_path / "pyproject.toml").write_text(changed, encoding="utf-8")
    assert set(lock.stale_locks(tmp_path, tmp_path / "pyproject.toml")) == stale


@pytest.mark.parametrize("name", sorted(lock.LOCKS))
def test_direct_requirements_are_pinned_within_their_bounds(name: str) -> None:
    pinned = pins(name)
    for requirement in requirements(lock.LOCKS[name]):
        key = canonicalize_name(requirement.name)
        if key == "torch":
            assert key not in pinned, "torch is locked alone in requirements/torch.txt"
            continue
        assert key in pinned, f"{name}.txt lacks {requirement}"
        assert requirement.specifier.contains(pinned[key], prereleases=True), (
            f"{name}.txt pins {key}=={pinned[key]}, outside {requirement}"
        )


@pytest.mark.parametrize("name", [*sorted(lock.LOCKS), "torch"])
def test_every_pin_carries_hashes(name: str) -> None:
    text = (REPO / "requirements" / f"{name}.txt").read_text(encoding="utf-8")
    entries = re.split(r"\n(?=[A-Za-z0-9])", text[_PIN.search(text).start() :])
    assert entries
    for entry in entries:
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), entry.splitlines()[0]


def test_locks_agree_with_the_development_lock() -> None:
    """The images run the versions the tests ran."""
    dev = pins("dev")
    for name in set(lock.LOCKS) - {"dev"}:
        for package, version in pins(name).items():
            assert dev.get(package) == version, (name, package, version, dev.get(package))


def test_the_api_lock_leaves_out_torch_and_the_demo() -> None:
    serve, demo = pins("serve"), pins("demo")
    assert not {"torch", "onnx", "gradio", "matplotlib", "pandas"} & set(serve)
    assert "gradio" in demo and "torch" not in demo
    torch = pins("torch")
    assert list(torch) == ["torch"] and torch["torch"].endswith("+cpu")


def test_the_makefile_installs_only_from_the_locks() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    locked = re.search(r"^PIP_LOCKED = (.*)$", makefile, re.M).group(1)
    assert "--require-hashes" in locked and "--no-deps" in locked
    for line in makefile.splitlines():
        if "pip install" in line and "PIP_LOCKED" not in line:
            # pip itself, the project without its dependencies, or uv for `make lock`.
            assert re.search(r"--upgrade pip|--no-deps -e \.|install --quiet uv", line), line
    for target, lockfile in (("$(VENV)/.installed", "dev"), ("$(SERVE_VENV)/.installed", "demo")):
        rule = makefile[makefile.index(f"{target}:") :].split("\n\n", 1)[0]
        assert f"requirements/{lockfile}.txt" in rule.splitlines()[0], "re-install on a new lock"
        assert f"-r requirements/{lockfile}.txt" in rule
        assert "lock.py --check" in rule
