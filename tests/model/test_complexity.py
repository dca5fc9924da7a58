"""Parameter and multiply-add counts reproduce the paper's Table II / REFERENCE_NOTES."""

from __future__ import annotations

import pytest
from torch import nn

from arinext.model.complexity import count_macs, count_params
from arinext.model.registry import create_model
from arinext.model.reparam import ReparamLevel, reparameterize_model

# (architecture, paper-level merged?, params in M, GMACs at 512 x 128), 309 classes.
PAPER_TABLE = [
    ("b1", False, 11.83, 2.62),
    ("b1", True, 11.69, 2.55),
    ("b0", False, 3.09, 0.71),
    ("b0", True, 3.02, 0.67),
    ("slowfast_r50", False, 26.68, 5.55),
]


@pytest.mark.parametrize(
    ("architecture", "merged", "params_m", "gmacs"),
    PAPER_TABLE,
    ids=[f"{a}-{'merged' if m else 'train'}" for a, m, _, _ in PAPER_TABLE],
)
def test_reproduces_paper_table(
    architecture: str, merged: bool, params_m: float, gmacs: float
) -> None:
    model = create_model(architecture, {"default": 309})
    if merged:
        model = reparameterize_model(model, ReparamLevel.PAPER, inplace=True)
    assert count_params(model) / 1e6 == pytest.approx(params_m, abs=0.01)
    assert count_macs(model, frames=512, mel_bins=128) / 1e9 == pytest.approx(gmacs, abs=0.01)


def test_mac_convention_on_a_hand_counted_model() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),  # 4*8*6 outputs x 9 taps = 1728
        nn.BatchNorm2d(4),  # 2 per element (scale and shift) = 384
        nn.ReLU(),  # not counted
        nn.Conv2d(4, 4, (3, 1), padding=(1, 0), groups=4),  # 192 outputs x 3 taps = 576
        nn.MaxPool2d(2),  # not counted
        nn.AdaptiveAvgPool2d(1),  # not counted
        nn.Flatten(),
        nn.Linear(4, 3),  # 12
    )
    assert count_macs(model, frames=8, mel_bins=6) == 1728 + 384 + 576 + 12
    assert count_params(model) == 36 + 8 + (12 + 4) + 15


def test_count_macs_restores_mode_and_removes_hooks() -> None:
    model = create_model("b0", {"default": 5}).train()
    count_macs(model, frames=64)
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())
    merged = reparameterize_model(model, ReparamLevel.FULL)
    # The full fold removes every BN, and with it the BN share of the count.
    paper = reparameterize_model(model, ReparamLevel.PAPER)
    assert count_macs(merged, frames=64) < count_macs(paper, frames=64)
