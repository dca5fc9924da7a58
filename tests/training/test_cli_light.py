"""Registering the training commands stays light: `arinext serve` runs without torch or YAML."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_PROBE = """
import argparse, sys
import training.cli
training.cli.register(argparse.ArgumentParser().add_subparsers())
heavy = ("torch", "onnx", "onnxruntime", "yaml", "pandas", "h5py", "soundfile", "matplotlib")
print(",".join(sorted(m for m in heavy if m in sys.modules)))
"""


def test_registering_commands_imports_no_heavy_modules() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "", f"imported: {result.stdout.strip()}"
