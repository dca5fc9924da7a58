"""Conv + BatchNorm, the unit every foldable conv of the networks is built from, and the stem."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from arinext.model.reparam import fuse_conv_bn

__all__ = ["ConvBN", "Stem", "load_conv", "to_pair"]


def to_pair(value: int | Sequence[int]) -> tuple[int, int]:
    """``k`` -> ``(k, k)``; a pair stays a pair (of ints)."""
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


def load_conv(conv: nn.Conv2d, weight: Tensor, bias: Tensor) -> nn.Conv2d:
    """Fill a freshly built (biased) conv with computed, detached values."""
    if conv.bias is None:
        raise ValueError("the fused conv must be built with a bias")
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    return conv


class ConvBN(nn.Module):
    """Conv2d (no bias) followed by BatchNorm2d.

    It is the unit every foldable conv of the network is built from, so the full fold is a
    local rewrite: ``reparameterize()`` replaces ``conv``+``bn`` by one biased conv named
    ``fused``. The paper's level never calls it (BNs outside the mixers stay, which keeps the
    paper's parameter count).
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int | Sequence[int] = 1,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        groups: int = 1,
        zero_init_gamma: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_chans,
            out_chans,
            to_pair(kernel_size),
            stride=to_pair(stride),
            padding=to_pair(padding),
            groups=groups,
            bias=False,
        )
        self.bn = nn.BatchNorm2d(out_chans)
        # MSRA fill as in the reference; a zero final gamma makes each residual block start as
        # the identity, which the reference relies on for stable early training.
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_gamma:
            nn.init.zeros_(self.bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "fused"):
            return self.fused(x)
        return self.bn(self.conv(x))

    def fused_kernel(self) -> tuple[Tensor, Tensor]:
        """Kernel and bias of this unit as one conv, whichever form it is in."""
        if hasattr(self, "fused"):
            return self.fused.weight, cast(Tensor, self.fused.bias)  # built with bias=True
        return fuse_conv_bn(self.conv.weight, self.conv.bias, self.bn)

    def reparameterize(self) -> None:
        """Fold the BN into the conv (a no-op once folded)."""
        if hasattr(self, "fused"):
            return
        weight, bias = self.fused_kernel()
        conv = self.conv
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            to_pair(conv.kernel_size),
            stride=to_pair(conv.stride),
            padding=to_pair(cast(tuple[int, int], conv.padding)),  # numeric: set in __init__
            dilation=to_pair(conv.dilation),
            groups=conv.groups,
            bias=True,
            device=weight.device,
            dtype=weight.dtype,
        )
        self.fused = load_conv(fused, weight, bias)
        del self.conv, self.bn


class Stem(ConvBN):
    """Strided conv + BN + ReLU + 3x3/2 max-pool: T and F reduced 4x before the stages.

    A ``ConvBN`` subclass so that ``stem.bn`` is the stem's BN (the one BN fine-tuning keeps
    trainable) and so that the full fold turns it into ``stem.fused``.
    """

    def __init__(self, in_chans: int, out_chans: int, kernel_size: Sequence[int] = (5, 7)) -> None:
        kt, kf = to_pair(kernel_size)
        super().__init__(in_chans, out_chans, (kt, kf), stride=2, padding=(kt // 2, kf // 2))
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.act(super().forward(x)))
