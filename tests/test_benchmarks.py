"""The README's benchmark commands run and print the tables it quotes (numbers are not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, timeout: float) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _rows(table: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith("| model") and "---" not in line
    ]


def test_frontend_speed_prints_a_row_per_preset_and_function() -> None:
    rows = _rows(_run("frontend_speed.py", "--runs", "3", timeout=120))
    assert {(r[0], r[3]) for r in rows if r[0] != "preset"} == {
        (preset, fn)
        for preset in ("vggsound", "speech_commands", "epic_sounds")
        for fn in ("log_mel", "clip_view")
    }
    assert all(float(r[4]) > 0 for r in rows if r[0] != "preset")


@pytest.mark.slow
def test_model_speed_prints_every_model_and_level() -> None:
    rows = _rows(_run("model_speed.py", "--quick", timeout=400))
    assert [(r[0], r[1]) for r in rows] == [
        ("b0", "train form"),
        ("b0", "paper-merged"),
        ("b0", "full fold"),
        ("b1", "train form"),
        ("b1", "paper-merged"),
        ("b1", "full fold"),
        ("slowfast_r50", "train form"),
    ]
    params = {(r[0], r[1]): r[2] for r in rows}
    assert params[("b1", "train form")] == "11.83M"
    assert params[("b1", "paper-merged")] == "11.69M"
    assert all(float(r[5]) > 0 and float(r[7]) > 0 for r in rows)
