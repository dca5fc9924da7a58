"""The modules the service imports must not pull in torch (the serving image has none)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_PROBE = """
import sys
import model.audio_config, model.frontend, model.labels, model.manifest
heavy = sorted(m for m in ("torch", "onnx", "yaml") if m in sys.modules)
print(",".join(heavy))
"""


def test_service_side_modules_do_not_import_torch() -> None:
    # A fresh interpreter: this test process has probably imported torch already.
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "", f"imported: {result.stdout.strip()}"
