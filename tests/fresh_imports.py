"""Which heavy modules a piece of code imports, seen from a fresh interpreter.

The test process itself has usually imported torch already, so "does X pull in torch?" can only
be answered in a new process.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "onnx", "onnxruntime", "yaml", "pandas", "h5py", "soundfile", "matplotlib")


def heavy_imports(code: str, watch: Iterable[str] = HEAVY) -> list[str]:
    """Run ``code`` in a new interpreter (repo as cwd) and list the ``watch`` modules it loaded."""
    report = f"print(','.join(sorted(m for m in {tuple(watch)!r} if m in sys.modules)))"
    probe = f"{code}\nimport sys\n{report}"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return [m for m in result.stdout.strip().split(",") if m]
