"""Registering the training commands stays light: `arinext serve` runs without torch or YAML."""

from __future__ import annotations

from tests.fresh_imports import heavy_imports


def test_registering_commands_imports_no_heavy_modules() -> None:
    code = (
        "import argparse, arinext.training.cli\n"
        "arinext.training.cli.register(argparse.ArgumentParser().add_subparsers())"
    )
    assert heavy_imports(code) == []
