"""``compile: true``: the training step runs through ``torch.compile``, and what a run saves and
exports is still the module's own weights (no ``_orig_mod.`` wrapper in the checkpoints).

Compiled with the ``aot_eager`` backend: it captures the same forward and backward graphs as
Inductor (the default, measured in ``benchmarks/train_speed.py --compile``) without spending a
minute generating kernels. One batch holds the whole training split, so it compiles once.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch._dynamo.utils import counters

from arinext.model.registry import create_model
from arinext.training.checkpoints import load_checkpoint
from tests.training.conftest import TINY_MODEL, run_cli, tiny_overrides


def test_a_compiled_run_learns_and_saves_the_modules_own_weights(
    tmp_path: Path, learnable_root: Path
) -> None:
    torch._dynamo.reset()
    counters.clear()
    run = tmp_path / "compiled"
    code = run_cli(
        "train", "--preset", "finetune-speech-commands", "--data-root", learnable_root,
        "--out", run, "--epochs", 3, "--batch-size", 4096, "--lr", 0.05,
        "--set", *tiny_overrides(compile="true", compile_backend="aot_eager"),
    )  # fmt: skip
    assert code == 0
    assert counters["stats"]["unique_graphs"] >= 1  # the training step went through Dynamo
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0], losses
    saved = load_checkpoint(run / "last.pt")
    assert saved["config"]["compile"] is True
    assert saved["config"]["compile_backend"] == "aot_eager"
    heads = {head: len(labels) for head, labels in saved["labels"].items()}
    eager = create_model("b0", heads=heads, **TINY_MODEL)
    assert list(saved["model"]) == list(eager.state_dict())
