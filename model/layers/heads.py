"""Named linear heads over a pooled embedding: what every architecture here ends with."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

__all__ = ["MultiHeadClassifier", "make_linear_heads"]


def make_linear_heads(num_features: int, heads: Mapping[str, int], like: Tensor) -> nn.ModuleDict:
    """One ``Linear(num_features, classes)`` per head, N(0, 0.01) weights as in the reference.

    Created on ``like``'s device and dtype so that ``reset_heads`` on a moved model just works.
    """
    if not heads:
        raise ValueError("at least one head is required")
    layers = {}
    for name, classes in heads.items():
        if not name.isidentifier() or int(classes) < 1:
            raise ValueError(f"bad head {name!r}: {classes!r}")
        linear = nn.Linear(num_features, int(classes), device=like.device, dtype=like.dtype)
        nn.init.normal_(linear.weight, std=0.01)
        nn.init.zeros_(linear.bias)
        layers[name] = linear
    return nn.ModuleDict(layers)


class MultiHeadClassifier(nn.Module):
    """Global average pool, dropout and one linear head per task over ``forward_features``.

    Subclasses build their trunk, then call :meth:`init_heads`; ``reset_heads`` swaps the heads
    for fine-tuning on a new task, and ``forward`` returns ``{head name: logits}``.
    """

    num_features: int

    def init_heads(self, num_features: int, heads: Mapping[str, int], dropout: float) -> None:
        self.num_features = num_features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head_names: list[str] = []
        self.reset_heads(heads)

    def reset_heads(self, heads: Mapping[str, int]) -> None:
        """Replace the linear head(s) by freshly initialised ones (fine-tuning on a new task)."""
        self.heads = make_linear_heads(self.num_features, heads, like=next(self.parameters()))
        self.head_names = list(self.heads)

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.dropout(self.forward_features(x))
        return {name: head(features) for name, head in self.heads.items()}
