"""Make a process of this (development) venv see only what the API-only image's venv holds.

The API-only image installs requirements/serve.txt; the development venv has everything (torch,
Gradio...), so a stray ``import torch`` or ``import gradio`` on the serving path would pass every
test here and fail only in the image. Every installed top-level module that belongs to no
distribution of that lockfile is made unimportable by a ``sitecustomize`` put first on
``PYTHONPATH``.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

__all__ = ["modules_missing_from_serve_image", "serve_requirement_closure", "write_import_blocker"]

# Present in any venv `python -m venv` makes (pip, setuptools and its import hook), and the
# project itself.
_ALWAYS_PRESENT = {"pip", "setuptools", "wheel", "arinext"}


def serve_requirement_closure(lockfile: Path) -> set[str]:
    """Canonical names of the distributions the API-only image installs from ``lockfile``."""
    text = lockfile.read_text(encoding="utf-8")
    pinned = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", text, flags=re.M)
    return {canonicalize_name(name) for name in pinned} | _ALWAYS_PRESENT


def modules_missing_from_serve_image(lockfile: Path) -> set[str]:
    """Top-level modules installed here that the API-only image would not have."""
    closure = serve_requirement_closure(lockfile)
    return {
        module
        for module, distributions in metadata.packages_distributions().items()
        if not any(canonicalize_name(d) in closure for d in distributions)
        and not module.startswith("_distutils")
    }


_BLOCKER = '''"""Written by tests/deploy/serve_only.py: what the API-only image does not install.

Every finder on sys.meta_path is wrapped so that blocked modules are not found at all: imports
fail with ModuleNotFoundError and importlib.util.find_spec() answers None, as in the image.
"""

import sys

_BLOCKED = frozenset({blocked!r})


class _ServeImageOnly:
    def __init__(self, finder):
        self._finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            return None
        find_spec = getattr(self._finder, "find_spec", None)
        return find_spec(name, path, target) if find_spec else None

    def invalidate_caches(self):
        invalidate = getattr(self._finder, "invalidate_caches", None)
        if invalidate:
            invalidate()


sys.meta_path[:] = [_ServeImageOnly(finder) for finder in sys.meta_path]
'''


def write_import_blocker(directory: Path, blocked: set[str]) -> Path:
    """Write ``sitecustomize.py`` into ``directory``; put it first on ``PYTHONPATH`` to use it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "sitecustomize.py"
    path.write_text(_BLOCKER.format(blocked=sorted(blocked)), encoding="utf-8")
    return path
