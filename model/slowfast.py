"""Auditory Slow-Fast ResNet-50, the baseline AudioRepInceptionNeXt is compared against.

Kazakos, Nagrani, Zisserman, Damen, "Slow-Fast Auditory Streams for Audio Recognition",
ICASSP 2021. Two ResNet-50 pathways of 2D convs over (T, F): the Slow pathway sees T/alpha frames
with full width, the Fast pathway all frames with 1/beta_inv of the width. After the stem and
after stages 1-3 a strided (7 x 1) conv brings Fast features to the Slow frame rate and they are
concatenated to the Slow features. Stages never stride time, only frequency. Both pathways are
pooled globally and concatenated before the linear head(s).

Same call contract as :class:`arinext.model.inception_next.AudioRepInceptionNeXt`: ``[N, 1, T, F]``
in, ``{head name: logits}`` out, ``head_names``, ``reset_heads``, and ``stem`` holding the stem BNs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arinext.model.inception_next import DEFAULT_HEADS
from arinext.model.layers import ConvBN, MultiHeadClassifier, Stem

__all__ = ["AuditorySlowFast", "Bottleneck", "FastToSlowFusion", "SlowFastStage", "SlowFastStem"]


class Bottleneck(nn.Module):
    """ResNet bottleneck factorised over the axes: (kt x 1) conv, (1 x kf) conv, 1x1 conv.

    The frequency conv carries the stride, and only along F (the reference keeps the time
    resolution through all stages).
    """

    def __init__(
        self,
        in_chans: int,
        inner_chans: int,
        out_chans: int,
        temporal_kernel: int,
        freq_kernel: int = 3,
        freq_stride: int = 1,
    ) -> None:
        super().__init__()
        if in_chans != out_chans or freq_stride != 1:
            self.shortcut: nn.Module = ConvBN(in_chans, out_chans, 1, stride=(1, freq_stride))
        else:
            self.shortcut = nn.Identity()
        self.conv_time = ConvBN(
            in_chans, inner_chans, (temporal_kernel, 1), padding=(temporal_kernel // 2, 0)
        )
        self.conv_freq = ConvBN(
            inner_chans,
            inner_chans,
            (1, freq_kernel),
            stride=(1, freq_stride),
            padding=(0, freq_kernel // 2),
        )
        self.conv_out = ConvBN(inner_chans, out_chans, 1, zero_init_gamma=True)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self.conv_time(x))
        y = self.act(self.conv_freq(y))
        return self.act(self.shortcut(x) + self.conv_out(y))


class FastToSlowFusion(nn.Module):
    """Lateral connection: (k x 1) conv with time stride alpha, BN, ReLU on Fast features.

    Its output has ``ratio`` times the Fast channels at the Slow frame rate and is concatenated
    to the Slow features along channels.
    """

    def __init__(self, fast_chans: int, ratio: int = 2, kernel: int = 7, alpha: int = 4) -> None:
        super().__init__()
        self.conv = ConvBN(
            fast_chans, fast_chans * ratio, (kernel, 1), stride=(alpha, 1), padding=(kernel // 2, 0)
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, slow: Tensor, fast: Tensor) -> Tensor:
        fused = self.act(self.conv(fast))
        missing = slow.shape[2] - fused.shape[2]
        if missing:
            # Frame counts that are not a multiple of 16 round differently in the two pathways;
            # zero-pad (or trim) at the end so that any T works. Never happens at 512 or 416.
            fused = F.pad(fused, (0, 0, 0, missing))
        return torch.cat([slow, fused], dim=1)


class SlowFastStem(nn.Module):
    """Both pathways' stems plus the first lateral fusion.

    The fusion lives here because the reference's fine-tuning keeps exactly these BNs (both stem
    BNs and the first fusion BN) trainable; ``model.stem`` is what fine-tuning looks at.
    """

    def __init__(
        self,
        in_chans: int,
        slow_chans: int,
        fast_chans: int,
        slow_kernel: tuple[int, int],
        fast_kernel: tuple[int, int],
        fusion: FastToSlowFusion,
    ) -> None:
        super().__init__()
        self.slow = Stem(in_chans, slow_chans, slow_kernel)
        self.fast = Stem(in_chans, fast_chans, fast_kernel)
        self.fusion = fusion

    def forward(self, slow: Tensor, fast: Tensor) -> tuple[Tensor, Tensor]:
        slow, fast = self.slow(slow), self.fast(fast)
        return self.fusion(slow, fast), fast


class SlowFastStage(nn.Module):
    """One ResNet stage per pathway, optionally followed by a Fast-to-Slow fusion."""

    def __init__(
        self,
        slow: Sequence[Bottleneck],
        fast: Sequence[Bottleneck],
        fusion: FastToSlowFusion | None,
    ) -> None:
        super().__init__()
        self.slow = nn.Sequential(*slow)
        self.fast = nn.Sequential(*fast)
        self.fusion = fusion

    def forward(self, slow: Tensor, fast: Tensor) -> tuple[Tensor, Tensor]:
        slow, fast = self.slow(slow), self.fast(fast)
        if self.fusion is not None:
            slow = self.fusion(slow, fast)
        return slow, fast


def _pathway_blocks(
    in_chans: int,
    inner: int,
    depth: int,
    temporal_kernel: int,
    freq_kernel: int,
    freq_stride: int,
) -> list[Bottleneck]:
    out = inner * 4
    return [
        Bottleneck(
            in_chans if i == 0 else out,
            inner,
            out,
            temporal_kernel,
            freq_kernel,
            freq_stride if i == 0 else 1,
        )
        for i in range(depth)
    ]


class AuditorySlowFast(MultiHeadClassifier):
    """Auditory Slow-Fast R50 (defaults: the VGG-Sound configuration of Kazakos et al.)."""

    def __init__(
        self,
        *,
        width: int = 64,
        depths: Sequence[int] = (3, 4, 6, 3),
        alpha: int = 4,
        beta_inv: int = 8,
        fusion_ratio: int = 2,
        fusion_kernel: int = 7,
        slow_temporal_kernels: Sequence[int] = (1, 1, 1, 3, 3),
        fast_temporal_kernels: Sequence[int] = (5, 3, 3, 3, 3),
        stem_freq_kernel: int = 7,
        freq_kernel: int = 3,
        heads: Mapping[str, int] = DEFAULT_HEADS,
        dropout: float = 0.5,
        in_chans: int = 1,
    ) -> None:
        super().__init__()
        if not len(slow_temporal_kernels) == len(fast_temporal_kernels) == len(depths) + 1:
            raise ValueError("need one temporal kernel for the stem and one per stage")
        self.alpha = alpha
        fast_width = width // beta_inv
        fused = fast_width * fusion_ratio  # channels the fusion adds to the Slow pathway

        def fusion(fast_chans: int) -> FastToSlowFusion:
            return FastToSlowFusion(fast_chans, fusion_ratio, fusion_kernel, alpha)

        self.stem = SlowFastStem(
            in_chans,
            width,
            fast_width,
            (slow_temporal_kernels[0], stem_freq_kernel),
            (fast_temporal_kernels[0], stem_freq_kernel),
            fusion(fast_width),
        )
        stages = []
        slow_in, fast_in = width + fused, fast_width
        for i, depth in enumerate(depths):
            stride = 1 if i == 0 else 2
            slow_inner, fast_inner = width * 2**i, fast_width * 2**i
            last = i == len(depths) - 1
            stages.append(
                SlowFastStage(
                    _pathway_blocks(
                        slow_in,
                        slow_inner,
                        depth,
                        slow_temporal_kernels[i + 1],
                        freq_kernel,
                        stride,
                    ),
                    _pathway_blocks(
                        fast_in,
                        fast_inner,
                        depth,
                        fast_temporal_kernels[i + 1],
                        freq_kernel,
                        stride,
                    ),
                    None if last else fusion(fast_inner * 4),
                )
            )
            slow_in = slow_inner * 4 + (0 if last else fast_inner * 4 * fusion_ratio)
            fast_in = fast_inner * 4
        self.stages = nn.ModuleList(stages)
        self.init_heads(slow_in + fast_in, heads, dropout)

    def slow_frames(self, x: Tensor) -> Tensor:
        """The Slow pathway's input: ``T // alpha`` frames evenly spread from first to last.

        Same index rule as the reference data loader (``linspace(0, T-1, T//alpha)`` truncated),
        which for T = 512 is close to, but not exactly, every 4th frame.
        """
        frames = x.shape[2]
        index = torch.linspace(0, frames - 1, frames // self.alpha, device=x.device).long()
        return x.index_select(2, index)

    def forward_features(self, x: Tensor) -> Tensor:
        """Concatenated pooled Slow and Fast embeddings, ``[N, 2048 + 256]`` for R50."""
        slow, fast = self.stem(self.slow_frames(x), x)
        for stage in self.stages:
            slow, fast = stage(slow, fast)
        return torch.cat([self.pool(slow).flatten(1), self.pool(fast).flatten(1)], dim=1)
