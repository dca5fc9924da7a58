"""Batch mixup (Zhang et al., ICLR 2018) on the network's input, as AST and PANNs train on log-mels.

Each mixed batch is ``lam * x + (1 - lam) * x[partner]`` with ``lam ~ Beta(alpha, alpha)`` folded
to ``lam >= 0.5``, so every example keeps its own label as the larger share; the loss is the same
mix of the two labels' cross-entropies. Training on such blends rewards scores that fall off
between classes instead of jumping, which is what a keyword spotter needs on words it never heard.
Draws come from torch's global CPU generator, so a seeded run is reproducible and resumes
exactly (the engine checkpoints that generator's state). That generator also seeds each
evaluation's DataLoader, so the draws depend on the evaluation schedule too, as dropout's do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Mix", "Mixup"]


@dataclass(frozen=True, eq=False)
class Mix:
    """How one batch was mixed: ``partner[i]`` is the example blended into example ``i``."""

    partner: torch.Tensor
    lam: float

    def loss(
        self, logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        """The blend's cross-entropy: ``lam`` of the own label's plus the rest of the partner's."""
        own = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        other = F.cross_entropy(logits, labels[self.partner], label_smoothing=label_smoothing)
        return self.lam * own + (1.0 - self.lam) * other


@dataclass(frozen=True)
class Mixup:
    """Mix a batch with probability ``prob``, with ``lam ~ Beta(alpha, alpha)``."""

    alpha: float
    prob: float = 1.0

    def __post_init__(self) -> None:
        if self.alpha <= 0 or not 0 < self.prob <= 1:
            raise ValueError(f"mixup needs alpha > 0 and 0 < prob <= 1, got {self}")

    def __call__(self, inputs: torch.Tensor) -> tuple[torch.Tensor, Mix | None]:
        """The (possibly) mixed batch and how it was mixed (None: left as it was)."""
        if len(inputs) < 2 or float(torch.rand(())) >= self.prob:
            return inputs, None
        concentration = torch.tensor(self.alpha, dtype=torch.float64)
        lam = float(torch.distributions.Beta(concentration, concentration).sample())
        lam = max(lam, 1.0 - lam)
        partner = torch.randperm(len(inputs)).to(inputs.device)
        return lam * inputs + (1.0 - lam) * inputs[partner], Mix(partner, lam)
