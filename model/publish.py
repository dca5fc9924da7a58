"""Writing an artifact directory so that a server never sees half of one.

Both ways of making an artifact (``model.export`` from a torch model, ``model.quantize`` from an
fp32 artifact) verify first and write last, through here: the files go into a sibling temporary
directory which is then renamed into place, and an existing directory is only replaced when it is
an earlier artifact (or empty). Torch-free, like the rest of the artifact format.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from model.manifest import MANIFEST_FILE, MODEL_FILE, Manifest, write_manifest

__all__ = ["destination_problem", "publish_artifact"]


def destination_problem(out: Path, overwrite: bool) -> str | None:
    """Why ``out`` must not be replaced (it exists and is not an artifact), or None."""
    if overwrite or not (out.exists() or out.is_symlink()):
        return None
    is_dir = out.is_dir() and not out.is_symlink()
    if is_dir and ((out / MANIFEST_FILE).is_file() or not any(out.iterdir())):
        return None
    return f"{out} exists and is not an artifact directory; pass overwrite=True to replace it"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def publish_artifact(out: Path, data: bytes, manifest: Manifest) -> None:
    """Write ``model.onnx`` (``data``) and the manifest to a temp dir, then rename it to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the artifact from a server's user
        (staging / MODEL_FILE).write_bytes(data)
        write_manifest(staging, manifest)
        if out.exists() or out.is_symlink():
            retired = staging.with_name(staging.name + ".old")
            out.rename(retired)
            try:
                staging.rename(out)
            except BaseException:
                retired.rename(out)
                raise
            _remove(retired)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
