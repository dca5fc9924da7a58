"""Class scores from logits: the one place softmax and sigmoid are computed.

The network and its ONNX artifact return logits; the service, training's evaluation and the int8
agreement check all turn them into probabilities here, so they can never disagree. Float64 and
max-shifted, so that probabilities of large logits neither overflow nor lose the small classes;
torch-free, so the service can use it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["Activation", "probabilities", "sigmoid", "softmax"]

# How a head's logits become scores (the manifest's HeadSpec.activation).
Activation = Literal["softmax", "sigmoid"]


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis`` in float64 (single-label heads)."""
    shifted = logits.astype(np.float64) - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function in float64 (multi-label heads)."""
    x = logits.astype(np.float64)
    # exp of a negative argument only, so large logits of either sign do not overflow.
    positive = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + positive), positive / (1.0 + positive))


def probabilities(logits: np.ndarray, activation: Activation) -> np.ndarray:
    """A head's scores: ``softmax`` over its last axis or an independent ``sigmoid`` per class."""
    if activation == "sigmoid":
        return sigmoid(logits)
    if activation == "softmax":
        return softmax(logits, axis=-1)
    raise ValueError(f"unknown activation {activation!r}")
