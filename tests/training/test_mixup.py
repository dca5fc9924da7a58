"""Batch mixup: the blend, its loss, how often it happens, and its reproducibility."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.config import ConfigError, TrainConfig
from training.distributed import Context
from training.engine import _train_epoch
from training.mixup import Mix, Mixup


def test_a_mixed_batch_is_the_stated_blend_with_the_own_example_the_larger_share() -> None:
    torch.manual_seed(0)
    inputs = torch.randn(16, 1, 5, 4)
    for _ in range(20):
        mixed, mix = Mixup(alpha=0.4)(inputs)
        assert mix is not None and 0.5 <= mix.lam <= 1.0
        assert sorted(mix.partner.tolist()) == list(range(16))
        expected = mix.lam * inputs + (1 - mix.lam) * inputs[mix.partner]
        assert torch.allclose(mixed, expected)


def test_the_same_seed_gives_the_same_mix_and_prob_sets_how_often() -> None:
    inputs = torch.randn(8, 3)
    torch.manual_seed(1)
    first = [Mixup(alpha=1.0, prob=0.5)(inputs) for _ in range(400)]
    torch.manual_seed(1)
    again = [Mixup(alpha=1.0, prob=0.5)(inputs) for _ in range(400)]
    for (x, a), (y, b) in zip(first, again, strict=True):
        assert torch.equal(x, y) and (a is None) == (b is None)
        if a is not None and b is not None:
            assert a.lam == b.lam and torch.equal(a.partner, b.partner)
    mixed = sum(mix is not None for _, mix in first)
    assert 160 < mixed < 240  # about half
    assert all(mix is None or mix.lam < 1 for _, mix in first)
    lone = torch.randn(1, 3)
    out, mix = Mixup(alpha=1.0)(lone)
    assert out is lone and mix is None  # nothing to blend with


def test_the_loss_is_the_same_blend_of_both_labels_cross_entropies() -> None:
    torch.manual_seed(2)
    logits, labels = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    partner = torch.tensor([5, 4, 3, 2, 1, 0])
    mix = Mix(partner, 0.7)
    own = F.cross_entropy(logits, labels, label_smoothing=0.1)
    other = F.cross_entropy(logits, labels[partner], label_smoothing=0.1)
    assert mix.loss(logits, labels, 0.1) == pytest.approx(float(0.7 * own + 0.3 * other))
    assert Mix(partner, 1.0).loss(logits, labels) == pytest.approx(
        float(F.cross_entropy(logits, labels))
    )


@pytest.mark.parametrize("alpha, prob", [(0.0, 1.0), (-1.0, 1.0), (0.4, 0.0), (0.4, 1.5)])
def test_nonsense_settings_are_refused(alpha: float, prob: float) -> None:
    with pytest.raises(ValueError, match="mixup needs"):
        Mixup(alpha, prob)


@pytest.mark.parametrize("key, value", [("mixup_alpha", -0.1), ("mixup_prob", 0.0)])
def test_the_config_refuses_them_too(key: str, value: float) -> None:
    with pytest.raises((ConfigError, ValueError)):
        TrainConfig.model_validate({key: value})
    assert TrainConfig().mixup_alpha == 0.0  # off unless asked for


class _Recording(Mixup):
    """Mixup that remembers each batch's mix, to check the loop trains on the blend."""

    def __init__(self) -> None:
        super().__init__(alpha=1.0)
        object.__setattr__(self, "mixes", [])

    def __call__(self, inputs: torch.Tensor) -> tuple[torch.Tensor, Mix | None]:
        mixed, mix = super().__call__(inputs)
        self.mixes.append((inputs, mixed, mix))  # type: ignore[attr-defined]
        return mixed, mix


def test_the_training_loop_feeds_the_blend_and_learns_from_both_labels() -> None:
    torch.manual_seed(3)
    net = torch.nn.Linear(4, 3, bias=False)
    torch.nn.init.zeros_(net.weight)  # zero logits: the loss is ln 3 whatever the labels
    seen: list[torch.Tensor] = []

    class Heads(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            seen.append(x)
            return {"h": net(x)}

    inputs, labels = torch.randn(8, 4), torch.tensor([[0], [1], [2], [0], [1], [2], [0], [1]])
    mixup = _Recording()
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    ctx = Context(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    stats = _train_epoch(
        Heads(), [(inputs, labels)], optimizer, scaler, ["h"], ctx, None, "t", mixup=mixup
    )
    ((given, mixed, mix),) = mixup.mixes
    assert given is inputs and mix is not None and torch.equal(seen[0], mixed)
    assert stats["train_loss"] == pytest.approx(math.log(3))
    # One SGD step on the blend's loss: the gradient mixes both labels' one-hot targets.
    probs = torch.full((8, 3), 1 / 3)
    own = F.one_hot(labels[:, 0], 3).float()
    partner = F.one_hot(labels[mix.partner, 0], 3).float()
    target = mix.lam * own + (1 - mix.lam) * partner
    expected = -((probs - target).T @ mixed) / 8
    assert torch.allclose(net.weight, expected, atol=1e-6)
