"""Writing an artifact directory so that a server never sees half of one.

Both ways of making an artifact (``arinext.model.export`` from a torch model,
``arinext.model.quantize`` from an fp32 artifact) verify first and write last, through here: the
files go into a sibling temporary directory which is then renamed into place, and an existing
directory is only replaced when it is an earlier artifact (or empty). Replacing swaps the two
directories in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``), so a server reloading ``out``
finds the old artifact or the new one, never none; where the kernel or file system cannot swap, two
renames leave a moment without. Torch-free, like the rest of the artifact format.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import tempfile
from pathlib import Path

from arinext.model.manifest import MANIFEST_FILE, MODEL_FILE, Manifest, write_manifest

__all__ = ["destination_problem", "exchange", "publish_artifact"]


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


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# errno values meaning "this kernel / file system cannot swap", not "the swap went wrong".
_NO_EXCHANGE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV}


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False where the platform cannot (nothing changed)."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if sys.platform != "linux" or renameat2 is None:
        return False
    result = renameat2(
        _AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), ctypes.c_uint(_RENAME_EXCHANGE)
    )
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def publish_artifact(out: Path, data: bytes, manifest: Manifest) -> None:
    """Write ``model.onnx`` (``data``) and the manifest to a temp dir, then rename it to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the artifact from a server's user
        (staging / MODEL_FILE).write_bytes(data)
        write_manifest(staging, manifest)
        if (out.exists() or out.is_symlink()) and exchange(staging, out):
            _remove(staging)  # now the previous artifact
        elif out.exists() or out.is_symlink():
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
