"""Write and check the lockfiles: one hashed requirements file per install of the project.

    python requirements/lock.py           # `make lock`: re-resolve every lock with uv
    python requirements/lock.py --check   # exit 1 when a lock no longer matches pyproject.toml

Each lock pins the whole dependency closure of some extras of pyproject.toml, with hashes, for
Linux x86_64 and Python 3.11 (the images, CI and the development machines); pip installs it with
``--require-hashes``. torch is locked alone (``torch.txt``, the CPU build): the images and the
development venv install it from wherever their platform provides it, and the other locks are
resolved against it without listing it. Each lock starts with a fingerprint of the pyproject.toml
tables it was resolved from, so that a dependency changed without re-locking fails ``make test``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYPROJECT = HERE.parent / "pyproject.toml"

# Lock name -> the extras it installs (besides the base dependencies).
LOCKS: dict[str, tuple[str, ...]] = {
    "dev": ("serve", "demo", "train", "dev"),
    "serve": ("serve",),
    "demo": ("serve", "demo"),
    "train": ("train",),
}
TORCH = "torch==2.13.0+cpu"
TARGET = ("--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28")
# Where the CPU build of torch comes from: a local wheel directory if the machine has one (pip is
# configured with it here), else PyTorch's CPU index.
TORCH_SOURCE = os.environ.get("ARINEXT_TORCH_FIND_LINKS", "/opt/wheels")
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
FINGERPRINT = "# pyproject.toml fingerprint: "


def fingerprint(extras: tuple[str, ...], pyproject: Path = PYPROJECT) -> str:
    """sha256 of what a lock is resolved from: requires-python, the base and the extras' lists."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    inputs = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "extras": {extra: optional.get(extra) for extra in extras},
        "torch": TORCH,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def stale_locks(directory: Path = HERE, pyproject: Path = PYPROJECT) -> list[str]:
    """Names of the locks whose fingerprint is missing or does not match ``pyproject``."""
    stale = []
    for name, extras in LOCKS.items():
        path = directory / f"{name}.txt"
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        recorded = [
            line.removeprefix(FINGERPRINT) for line in lines if line.startswith(FINGERPRINT)
        ]
        if recorded != [fingerprint(extras, pyproject)]:
            stale.append(name)
    return stale


def _uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if found is None:
        sys.exit("lock: uv is not installed (it is in the dev extra: make setup)")
    return found


def _compile(arguments: list[str], output: Path, header: str | None) -> None:
    command = [_uv(), "pip", "compile", "--quiet", "--generate-hashes", *TARGET, *arguments]
    command += ["--index-strategy", "unsafe-best-match", "--custom-compile-command", "make lock"]
    if Path(TORCH_SOURCE).is_dir():
        command += ["--find-links", TORCH_SOURCE]
    else:
        command += ["--extra-index-url", TORCH_INDEX]
    command += ["--output-file", str(output)]
    subprocess.run(command, check=True, cwd=HERE.parent)
    if header is not None:
        text = output.read_text(encoding="utf-8")
        output.write_text(header + "\n" + text, encoding="utf-8")


def _hash_local_wheels(lock: Path) -> None:
    """Add the hashes uv leaves out for wheels found in a local directory (``--find-links``)."""
    text = lock.read_text(encoding="utf-8")
    name, _, version = TORCH.partition("==")
    wheels = sorted(Path(TORCH_SOURCE).glob(f"{name}-{version}-*.whl"))
    if "--hash=" in text or not wheels:
        return
    hashes = [hashlib.sha256(wheel.read_bytes()).hexdigest() for wheel in wheels]
    pinned = " \\\n".join([TORCH, *(f"    --hash=sha256:{h}" for h in hashes)])
    lock.write_text(text.replace(TORCH + "\n", pinned + "\n", 1), encoding="utf-8")


def write_locks() -> None:
    """Re-resolve torch.txt, then dev.txt against it, then the others within dev.txt's pins."""
    spec = HERE / "torch.in"
    spec.write_text(TORCH + "\n", encoding="utf-8")
    try:
        _compile([str(spec), "--no-deps"], HERE / "torch.txt", None)
    finally:
        spec.unlink()
    _hash_local_wheels(HERE / "torch.txt")
    # dev first: the other locks take its versions, so the tests exercise what the images run.
    for name in sorted(LOCKS, key=lambda n: n != "dev"):
        extras = LOCKS[name]
        arguments = [str(PYPROJECT.relative_to(HERE.parent))]
        arguments += [a for extra in extras for a in ("--extra", extra)]
        arguments += ["--constraint", "requirements/torch.txt", "--no-emit-package", "torch"]
        if name != "dev":
            arguments += ["--constraint", "requirements/dev.txt"]
        _compile(arguments, HERE / f"{name}.txt", FINGERPRINT + fingerprint(extras))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the fingerprints")
    args = parser.parse_args()
    if not args.check:
        write_locks()
    stale = stale_locks()
    if stale:
        sys.stderr.write(f"lock: {', '.join(stale)} out of date with pyproject.toml: make lock\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
