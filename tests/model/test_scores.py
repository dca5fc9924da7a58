"""Scores: softmax and sigmoid against their definitions, stable for large logits."""

from __future__ import annotations

import numpy as np
import pytest

from arinext.model.scores import probabilities, sigmoid, softmax
from tests.fixtures import REFERENCE_EXPECTED


def test_softmax_reproduces_the_reference_probabilities() -> None:
    with np.load(REFERENCE_EXPECTED) as data:
        np.testing.assert_allclose(softmax(data["logits"]), data["probs"], rtol=0, atol=1e-6)


def test_softmax_is_stable_and_normalised() -> None:
    logits = np.array([[1000.0, 999.0, -1000.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    probs = softmax(logits)
    assert probs.dtype == np.float64 and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0)
    np.testing.assert_allclose(probs[0, :2], [1 / (1 + np.exp(-1)), 1 - 1 / (1 + np.exp(-1))])
    np.testing.assert_allclose(probs[1], 1 / 3)
    np.testing.assert_allclose(softmax(logits.T, axis=0), probs.T)


def test_sigmoid_is_stable_and_matches_its_definition() -> None:
    x = np.array([-800.0, -3.0, 0.0, 2.5, 800.0])
    with np.errstate(over="raise"):
        got = sigmoid(x)
    np.testing.assert_allclose(got[1:4], 1 / (1 + np.exp(-x[1:4])))
    assert got[0] == 0.0 and got[-1] == 1.0


def test_probabilities_follow_the_activation() -> None:
    logits = np.array([[2.0, -1.0, 0.5]])
    np.testing.assert_allclose(probabilities(logits, "softmax"), softmax(logits))
    np.testing.assert_allclose(probabilities(logits, "sigmoid"), sigmoid(logits))
    with pytest.raises(ValueError, match="unknown activation"):
        probabilities(logits, "relu")  # type: ignore[arg-type]
