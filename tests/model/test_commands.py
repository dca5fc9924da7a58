"""``arinext info`` and the torch-free registration of the model package's commands."""

from __future__ import annotations

import json

import pytest

from arinext.cli import main
from tests.fresh_imports import heavy_imports


def test_registering_does_not_import_torch() -> None:
    code = (
        "import argparse, arinext.model.commands\n"
        "arinext.model.commands.register(argparse.ArgumentParser().add_subparsers())"
    )
    assert heavy_imports(code, ("torch",)) == []


def test_info_json_matches_the_paper(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--architecture", "b0", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["architecture"] == "b0"
    # Reference sizes for C=32 at 512x128, 309 classes: 3.09M / 3.02M, 0.71 / 0.67 G.
    assert round(row["params_none"] / 1e6, 2) == 3.09
    assert round(row["params_paper"] / 1e6, 2) == 3.02
    assert row["params_full"] < row["params_paper"]
    assert round(row["gmacs_none"], 2) == 0.71
    assert round(row["gmacs_paper"], 2) == 0.67
    assert row["gmacs_full"] < row["gmacs_paper"]


def test_info_table_shows_slowfast_in_train_form_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--architecture", "slowfast_r50", "--frames", "64", "--classes", "5"]) == 0
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.startswith("| slowfast_r50 ")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].endswith("M")
    assert cells[2:4] == ["-", "-"]
    assert cells[5:7] == ["-", "-"]


def test_info_rejects_unknown_architecture(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--architecture", "b7"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown architecture 'b7'")
