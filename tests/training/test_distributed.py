"""torchrun with two CPU processes (gloo), and exact continuation with --resume.

A run stopped after one epoch and resumed for a second must end bit-identical (model,
optimiser, schedule) to a run that did both epochs in one go: that checks that the optimiser
state, the schedule, the epoch, the data order and every rank's RNG all came back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from arinext.training.checkpoints import load_checkpoint
from tests.training.conftest import tiny_overrides

REPO = Path(__file__).resolve().parents[2]


def _torchrun(*argv: object) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "arinext", "train", *[str(a) for a in argv],
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    result = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]


def _assert_same(a: object, b: object, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.slow
def test_torchrun_two_processes_and_exact_resume(
    speech_commands_root: Path, tmp_path: Path
) -> None:
    common = [
        "--preset", "finetune-speech-commands", "--data-root", speech_commands_root,
        "--batch-size", 8, "--lr", 0.02,
        "--set", *tiny_overrides(lr_milestones="[1]", precise_bn_batches=2),
    ]  # fmt: skip
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    _torchrun(*common, "--out", stopped, "--epochs", 1)
    first = load_checkpoint(stopped / "last.pt")
    assert first["epoch"] == 1 and len(first["rng"]["per_rank"]) == 2
    assert first["config"]["batch_size"] == 8  # global: 4 clips per process
    assert first["metrics"]["num_clips"] == 9  # every validation clip once, gathered
    shutil.copy(stopped / "last.pt", tmp_path / "epoch1.pt")

    _torchrun(*common, "--out", stopped, "--epochs", 2, "--resume")
    _torchrun(*common, "--out", straight, "--epochs", 2)
    resumed, reference = load_checkpoint(stopped / "last.pt"), load_checkpoint(straight / "last.pt")
    assert resumed["epoch"] == reference["epoch"] == 2
    assert resumed["scheduler"]["last_epoch"] == 2
    assert resumed["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.002)
    for key in ("model", "optimizer", "scheduler", "metrics"):
        _assert_same(resumed[key], reference[key], key)
    lines = (stopped / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and '"epoch": 2' in lines[1]
    # The resumed run started from the saved optimiser state (momentum buffers, step).
    assert not torch.equal(
        first["optimizer"]["state"][0]["momentum_buffer"],
        resumed["optimizer"]["state"][0]["momentum_buffer"],
    )
