"""Named architectures: variants are data (constructor arguments), looked up by name.

``b0``/``b1`` are AudioRepInceptionNeXt at C = 32 / 64 (Table I of Lau, Rehman, Po,
Neurocomputing 2024, arXiv 2404.13551), ``b1_2d`` the paper's 2D-kernel ablation, and
``slowfast_r50`` the Auditory Slow-Fast baseline (Kazakos et al., ICASSP 2021).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from arinext.model.inception_next import AudioRepInceptionNeXt
from arinext.model.slowfast import AuditorySlowFast

__all__ = ["ARCHITECTURES", "VARIANTS", "create_model"]

_INCEPTION_NEXT = dict(depths=(3, 4, 6, 3), kernel_sizes=(21, 11, 3), stem_kernel=(5, 7))

VARIANTS: dict[str, dict[str, Any]] = {
    "b0": dict(_INCEPTION_NEXT, width=32, mixer="band"),
    "b1": dict(_INCEPTION_NEXT, width=64, mixer="band"),
    "b1_2d": dict(_INCEPTION_NEXT, width=64, mixer="2d"),
    "slowfast_r50": dict(
        width=64,
        depths=(3, 4, 6, 3),
        alpha=4,
        beta_inv=8,
        fusion_ratio=2,
        fusion_kernel=7,
        slow_temporal_kernels=(1, 1, 1, 3, 3),
        fast_temporal_kernels=(5, 3, 3, 3, 3),
    ),
}

_CLASSES: dict[str, type[nn.Module]] = {"slowfast_r50": AuditorySlowFast}

ARCHITECTURES: tuple[str, ...] = tuple(VARIANTS)


def create_model(architecture: str, heads: Mapping[str, int], **overrides: Any) -> nn.Module:
    """Build ``architecture`` with the given heads; ``overrides`` replace variant arguments."""
    if architecture not in VARIANTS:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {ARCHITECTURES}")
    cls = _CLASSES.get(architecture, AudioRepInceptionNeXt)
    kwargs = {**VARIANTS[architecture], **overrides}
    return cls(heads=dict(heads), **kwargs)
