"""``channels_last: true``: the training step runs in NHWC (the fast layout for oneDNN on CPU,
``benchmarks/train_speed.py``) and learns what the NCHW run learns, step for step."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.nn.modules.module import register_module_forward_pre_hook

from arinext.model.inception_next import MultiScaleMixer
from arinext.training.checkpoints import load_checkpoint
from tests.training.conftest import run_cli, tiny_overrides


def _train(run: Path, root: Path, channels_last: bool) -> tuple[list[float], list[bool]]:
    """The run's training losses, and for each training-mode mixer call whether its input was
    channels-last."""
    layouts: list[bool] = []

    def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if isinstance(module, MultiScaleMixer) and module.training:
            layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))

    handle = register_module_forward_pre_hook(record)
    try:
        code = run_cli(
            "train", "--preset", "finetune-speech-commands", "--data-root", root,
            "--out", run, "--epochs", 3, "--batch-size", 64, "--lr", 0.05, "--seed", 3,
            "--set", *tiny_overrides(channels_last=str(channels_last).lower()),
        )  # fmt: skip
    finally:
        handle.remove()
    assert code == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in records], layouts


def test_a_channels_last_run_trains_in_nhwc_and_learns_what_nchw_learns(
    tmp_path: Path, learnable_root: Path
) -> None:
    nchw_losses, nchw_layouts = _train(tmp_path / "nchw", learnable_root, False)
    nhwc_losses, nhwc_layouts = _train(tmp_path / "nhwc", learnable_root, True)
    assert nhwc_layouts and all(nhwc_layouts)
    assert nchw_layouts and not any(nchw_layouts)
    assert nhwc_losses[-1] < nhwc_losses[0]
    # Same data order and dropout draws; only float rounding differs between the layouts, and
    # the optimiser lets it grow a little from step to step.
    assert abs(nhwc_losses[0] - nchw_losses[0]) <= 1e-4 * nchw_losses[0]
    torch.testing.assert_close(
        torch.tensor(nhwc_losses), torch.tensor(nchw_losses), rtol=1e-2, atol=1e-3
    )
    assert load_checkpoint(tmp_path / "nhwc" / "last.pt")["config"]["channels_last"] is True
