"""Structural re-parameterisation helpers (RepVGG / MobileOne / FastViT style).

As in MobileOne / FastViT / timm, every multi-branch or conv+BN module owns a ``reparameterize()``
that rewrites itself into its plain inference form, completely, and is a no-op the second time.
Modules whose paper-level form differs (the multi-scale mixers: branches merged, identity add and
the other BNs kept) also offer ``merge_branches()``. This module holds the arithmetic they share
and the model-level driver, which calls nothing else, so foreign re-parameterisable blocks work.
The maths is the paper's Sec. III-C (Lau, Rehman, Po, Neurocomputing 2024, arXiv 2404.13551):
fold BN into the preceding conv, zero-pad small kernels to the large size along their own axis,
and sum.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arinext.model.manifest import ReparamLevel

__all__ = ["ReparamLevel", "fuse_conv_bn", "pad_kernel_to", "reparameterize_model"]

logger = logging.getLogger(__name__)


def fuse_conv_bn(weight: Tensor, bias: Tensor | None, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Return the kernel and bias of ``bn(conv(x))`` as one conv (inference statistics).

    Kept differentiable (plain tensor ops, no ``no_grad``) so that it can also serve
    training-time tricks; callers that build modules from it detach the result themselves.
    """
    mean, var = bn.running_mean, bn.running_var
    if mean is None or var is None:
        raise ValueError("a BatchNorm without running statistics has no inference form to fuse")
    std = (var + bn.eps).sqrt()
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    fused_weight = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    conv_bias = bias if bias is not None else torch.zeros_like(mean)
    fused_bias = beta + (conv_bias - mean) * scale
    return fused_weight, fused_bias


def pad_kernel_to(kernel: Tensor, size: int, axis: int) -> Tensor:
    """Zero-pad ``kernel`` symmetrically along ``axis`` only, so that it has ``size`` taps.

    A k x 1 kernel must stay k x 1 in the other axis, otherwise summing it into a 21 x 1 kernel
    would misalign the centre tap; hence per-axis padding rather than padding to a square.
    """
    axis = axis % kernel.dim()
    extra = size - kernel.shape[axis]
    if extra < 0 or extra % 2:
        raise ValueError(
            f"cannot centre a {kernel.shape[axis]}-tap kernel in {size} taps along axis {axis}"
        )
    # F.pad lists (before, after) pairs starting from the last axis.
    pads = [0, 0] * (kernel.dim() - axis - 1) + [extra // 2, extra // 2]
    return F.pad(kernel, pads)


def _reparameterize_tree(module: nn.Module, method: str) -> None:
    # Parents first: a mixer consumes its branches and deletes them, so they are not visited.
    rewrite = getattr(module, method, None)
    if callable(rewrite):
        rewrite()
    for child in list(module.children()):
        _reparameterize_tree(child, method)


def reparameterize_model(
    model: nn.Module, level: ReparamLevel | str = ReparamLevel.FULL, inplace: bool = False
) -> nn.Module:
    """Turn a trained model into its inference form ``level`` and return it in eval mode.

    ``PAPER`` is the paper's level: only the multi-scale mixers are merged (``merge_branches()``;
    identity add and the other BNs kept). ``FULL`` calls every module's ``reparameterize()``:
    identities folded into centre taps and every BN into its conv, a plain conv/ReLU graph.
    ``NONE`` changes nothing. The model is deep-copied unless ``inplace``, so the trainable form
    survives.
    """
    level = ReparamLevel(level)
    if not inplace:
        model = copy.deepcopy(model)
    if level is not ReparamLevel.NONE:
        method = "merge_branches" if level is ReparamLevel.PAPER else "reparameterize"
        _reparameterize_tree(model, method)
    logger.debug("re-parameterised %s to level %s", type(model).__name__, level.value)
    return model.eval()
