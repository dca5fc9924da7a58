"""The numpy metrics agree with scikit-learn (used here only) on random scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score, top_k_accuracy_score

from arinext.training.metrics import (
    action_topk,
    average_precision,
    d_prime,
    evaluation_metrics,
    mean_average_precision,
    mean_roc_auc,
    roc_auc,
    topk_accuracy,
)


@pytest.fixture
def scores_labels() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    classes, n = 12, 400
    labels = np.r_[np.arange(classes), rng.integers(0, classes, n - classes)]  # every class
    scores = rng.random((n, classes)) + 0.6 * np.eye(classes)[labels]
    return scores, labels


@pytest.mark.parametrize("k", [1, 5])
def test_topk_matches_sklearn(scores_labels: tuple[np.ndarray, np.ndarray], k: int) -> None:
    scores, labels = scores_labels
    expected = top_k_accuracy_score(labels, scores, k=k, labels=np.arange(scores.shape[1]))
    assert topk_accuracy(scores, labels, k) == pytest.approx(expected, abs=1e-12)


def test_map_and_auc_match_sklearn(scores_labels: tuple[np.ndarray, np.ndarray]) -> None:
    scores, labels = scores_labels
    onehot = np.eye(scores.shape[1])[labels]
    assert mean_average_precision(scores, labels) == pytest.approx(
        average_precision_score(onehot, scores, average="macro"), abs=1e-12
    )
    assert mean_roc_auc(scores, labels) == pytest.approx(
        roc_auc_score(onehot, scores, average="macro"), abs=1e-12
    )


def test_ties_are_handled_like_sklearn() -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, 200).astype(float)  # many ties
    positive = rng.random(200) < 0.3
    assert average_precision(scores, positive) == pytest.approx(
        average_precision_score(positive, scores), abs=1e-12
    )
    assert roc_auc(scores, positive) == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)


def test_d_prime() -> None:
    assert d_prime(0.5) == pytest.approx(0.0)
    assert d_prime(0.976) == pytest.approx(np.sqrt(2) * norm.ppf(0.976))
    assert d_prime(0.976) == pytest.approx(2.79, abs=0.01)  # the paper's AUC 97.6 -> d' 2.79


def test_action_accuracy() -> None:
    rng = np.random.default_rng(2)
    n, verbs, nouns = 300, 7, 9
    verb_p = rng.dirichlet(np.ones(verbs), n)
    noun_p = rng.dirichlet(np.ones(nouns), n)
    verb_y = rng.integers(0, verbs, n)
    noun_y = rng.integers(0, nouns, n)
    both = (verb_p.argmax(1) == verb_y) & (noun_p.argmax(1) == noun_y)
    assert action_topk(verb_p, noun_p, verb_y, noun_y, 1) == pytest.approx(both.mean())
    # Top-5 over the full joint (verb x noun) distribution, by brute force.
    joint = (verb_p[:, :, None] * noun_p[:, None, :]).reshape(n, -1)
    top5 = np.argsort(-joint, axis=1)[:, :5]
    expected = np.mean(np.any(top5 == (verb_y * nouns + noun_y)[:, None], axis=1))
    assert action_topk(verb_p, noun_p, verb_y, noun_y, 5) == pytest.approx(expected)

    metrics = evaluation_metrics(
        {"verb": verb_p, "noun": noun_p},
        {"verb": verb_y, "noun": noun_y},
        {"unseen": list(range(0, n, 3))},
    )
    assert metrics["action_top1"] == pytest.approx(both.mean())
    assert metrics["verb_top1"] == pytest.approx(np.mean(verb_p.argmax(1) == verb_y))
    assert metrics["unseen_action_top1"] == pytest.approx(both[::3].mean())
    assert metrics["num_clips"] == n
