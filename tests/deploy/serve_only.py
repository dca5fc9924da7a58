"""Make a process of this (development) venv see only what the serving image's venv holds.

The serving image installs ``.[serve]``; the development venv has everything (torch included), so a
stray ``import torch`` or ``import matplotlib`` on the serving path would pass every test here
and fail only in the image. The requirement closure of the base dependencies plus the ``serve``
extra is read from the installed distributions' metadata; any other installed top-level module is
made unimportable by a ``sitecustomize`` put first on ``PYTHONPATH``.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

__all__ = ["modules_missing_from_serve_image", "serve_requirement_closure", "write_import_blocker"]

# Present in any venv `python -m venv` makes (pip, setuptools and its import hook), and the
# project itself.
_ALWAYS_PRESENT = {"pip", "setuptools", "wheel", "arinext"}


def serve_requirement_closure(pyproject: Path) -> set[str]:
    """Canonical names of the distributions ``pip install '.[serve]'`` installs."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    pending = [Requirement(r) for r in project["dependencies"]]
    pending += [Requirement(r) for r in project["optional-dependencies"]["serve"]]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement = pending.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            distribution = metadata.distribution(key[0])
        except metadata.PackageNotFoundError:
            continue  # not installed here, so nothing of it can be imported either
        for text in distribution.requires or []:
            dependency = Requirement(text)
            extras = requirement.extras or {""}
            if dependency.marker is None or any(
                dependency.marker.evaluate({"extra": extra}) for extra in extras
            ):
                pending.append(dependency)
    return {name for name, _ in seen} | _ALWAYS_PRESENT


def modules_missing_from_serve_image(pyproject: Path) -> set[str]:
    """Top-level modules installed here that the serving image would not have."""
    closure = serve_requirement_closure(pyproject)
    return {
        module
        for module, distributions in metadata.packages_distributions().items()
        if not any(canonicalize_name(d) in closure for d in distributions)
        and not module.startswith("_distutils")
    }


_BLOCKER = '''"""Written by tests/deploy/serve_only.py: what the serving image does not install."""

import importlib.abc
import sys

_BLOCKED = frozenset({blocked!r})


class _ServeImageOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(
                f"No module named {{name!r}} (not installed by the serve extra)", name=name
            )
        return None


sys.meta_path.insert(0, _ServeImageOnly())
'''


def write_import_blocker(directory: Path, blocked: set[str]) -> Path:
    """Write ``sitecustomize.py`` into ``directory``; put it first on ``PYTHONPATH`` to use it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "sitecustomize.py"
    path.write_text(_BLOCKER.format(blocked=sorted(blocked)), encoding="utf-8")
    return path
