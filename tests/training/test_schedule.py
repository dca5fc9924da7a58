"""AdamW with warm-up + cosine (the from-scratch recipe), label smoothing, and their resume."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from arinext.training.checkpoints import load_checkpoint
from arinext.training.engine import warmup_cosine
from tests.training.conftest import run_cli, tiny_overrides

# speech_commands_root: 24 training clips, so 3 optimiser steps per epoch at batch 8.
STEPS = 3
LR = 0.004


def test_warmup_then_half_cosine_to_zero() -> None:
    factor = warmup_cosine(warmup=4, total=20)
    assert [factor(t) for t in range(4)] == [0.25, 0.5, 0.75, 1.0]
    after = [factor(t) for t in range(4, 21)]
    assert after[0] == 1.0 and after[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in itertools.pairwise(after))
    assert factor(12) == pytest.approx(0.5)  # half-way through the decay
    assert factor(100) == pytest.approx(0.0, abs=1e-12)  # stays at zero past the end
    assert warmup_cosine(0, 10)(0) == 1.0


def _train(root: Path, out: Path, epochs: int, *extra: str) -> None:
    code = run_cli(
        "train", "--preset", "finetune-speech-commands", "--data-root", root, "--out", out,
        "--epochs", epochs, "--batch-size", 8, "--lr", LR, *extra,
        "--set", *tiny_overrides(
            optimizer="adamw", schedule="cosine", warmup_epochs=1, label_smoothing=0.1,
            weight_decay=0.05,
        ),
    )  # fmt: skip
    assert code == 0


def _lrs(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["lr"] for line in lines]


def test_adamw_cosine_steps_per_batch_and_resumes_on_its_own_epochs(
    speech_commands_root: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    _train(speech_commands_root, run, 1)
    first = load_checkpoint(run / "last.pt")
    assert "exp_avg" in first["optimizer"]["state"][0]  # AdamW's moments, not SGD momentum
    assert first["optimizer"]["param_groups"][0]["weight_decay"] == 0.05
    assert first["scheduler"]["last_epoch"] == STEPS  # stepped once per batch
    assert first["optimizer"]["param_groups"][0]["lr"] == pytest.approx(LR)  # warm-up done

    # Resumed with more epochs, the cosine spans the new length and ends at zero.
    _train(speech_commands_root, run, 3, "--resume")
    last = load_checkpoint(run / "last.pt")
    assert last["scheduler"]["last_epoch"] == 3 * STEPS
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    expected = [LR / STEPS, LR, LR * 0.5 * (1 + math.cos(math.pi * STEPS / (2 * STEPS)))]
    assert _lrs(run) == pytest.approx(expected)
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
