"""Evaluation metrics in numpy: top-k, mAP, ROC-AUC, d-prime and EPIC-100 action accuracy.

Numpy only (no scikit-learn at run time); the tests check agreement with scikit-learn. Ties in
scores are handled as scikit-learn does (one operating point per distinct score), so values
match it exactly rather than approximately.

Conventions: accuracies, mAP and AUC are fractions in [0, 1]; class-averaged metrics average
over the classes that have at least one positive (and, for AUC, one negative) in the
evaluation set, since AP and AUC are undefined otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import norm

__all__ = [
    "action_topk",
    "average_precision",
    "classification_metrics",
    "d_prime",
    "evaluation_metrics",
    "mean_average_precision",
    "mean_roc_auc",
    "roc_auc",
    "topk_accuracy",
]

# Heads whose joint prediction is an EPIC-KITCHENS-100 action.
ACTION_HEADS = ("verb", "noun")


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores (k capped at classes)."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def _operating_points(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true/false positives at each distinct score threshold, highest first."""
    order = np.argsort(-scores, kind="mergesort")
    scores = scores[order]
    hits = positive[order].astype(np.float64)
    last_of_run = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(hits)[last_of_run]
    fps = last_of_run + 1 - tps
    return tps, fps


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the precision-recall curve as a step sum, ``sum_n (R_n - R_{n-1}) P_n``."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if not positive.any():
        raise ValueError("average precision needs at least one positive")
    tps, fps = _operating_points(scores, positive)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids between distinct thresholds)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        raise ValueError("ROC-AUC needs both positives and negatives")
    tps, fps = _operating_points(scores, positive)
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def _one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return labels.astype(bool)
    out = np.zeros((labels.size, classes), dtype=bool)
    out[np.arange(labels.size), labels] = True
    return out


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of AP; ``labels`` are class indices (N,) or a multi-hot (N, C)."""
    scores = np.asarray(scores)
    target = _one_hot(labels, scores.shape[1])
    values = [
        average_precision(scores[:, c], target[:, c])
        for c in range(scores.shape[1])
        if target[:, c].any()
    ]
    return float(np.mean(values)) if values else float("nan")


def mean_roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of ROC-AUC (one-vs-rest)."""
    scores = np.asarray(scores)
    target = _one_hot(labels, scores.shape[1])
    values = [
        roc_auc(scores[:, c], target[:, c])
        for c in range(scores.shape[1])
        if target[:, c].any() and not target[:, c].all()
    ]
    return float(np.mean(values)) if values else float("nan")


def d_prime(auc: float) -> float:
    """Sensitivity index of an AUC, ``sqrt(2) * Phi^-1(AUC)``, as AudioSet papers report it."""
    return float(np.sqrt(2.0) * norm.ppf(auc))


def action_topk(
    verb_scores: np.ndarray,
    noun_scores: np.ndarray,
    verb_labels: np.ndarray,
    noun_labels: np.ndarray,
    k: int,
) -> float:
    """EPIC-100 action accuracy: the (verb, noun) pair is among the k best joint scores.

    The joint score is the product of the verb and noun probabilities; the k best pairs are
    always among the k best verbs times the k best nouns, so only k*k pairs are scored.
    """
    kv = min(k, verb_scores.shape[1])
    kn = min(k, noun_scores.shape[1])
    top_v = np.argsort(-verb_scores, axis=1)[:, :kv]
    top_n = np.argsort(-noun_scores, axis=1)[:, :kn]
    sv = np.take_along_axis(verb_scores, top_v, axis=1)
    sn = np.take_along_axis(noun_scores, top_n, axis=1)
    joint = (sv[:, :, None] * sn[:, None, :]).reshape(len(sv), -1)
    best = np.argsort(-joint, axis=1, kind="stable")[:, : min(k, joint.shape[1])]
    pred_v = np.take_along_axis(top_v, best // kn, axis=1)
    pred_n = np.take_along_axis(top_n, best % kn, axis=1)
    hit = (pred_v == verb_labels[:, None]) & (pred_n == noun_labels[:, None])
    return float(np.mean(hit.any(axis=1)))


def classification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1, top-5, mAP, AUC and d-prime of one head (the paper's VGG-Sound table columns)."""
    auc = mean_roc_auc(scores, labels)
    return {
        "top1": topk_accuracy(scores, labels, 1),
        "top5": topk_accuracy(scores, labels, 5),
        "mAP": mean_average_precision(scores, labels),
        "AUC": auc,
        "dprime": d_prime(auc) if np.isfinite(auc) else float("nan"),
    }


def _metrics_of(
    scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]
) -> dict[str, float]:
    if len(scores) == 1:
        ((head, head_scores),) = scores.items()
        return classification_metrics(head_scores, labels[head])
    out: dict[str, float] = {}
    for head, head_scores in scores.items():
        for key, value in classification_metrics(head_scores, labels[head]).items():
            out[f"{head}_{key}"] = value
    if all(h in scores for h in ACTION_HEADS):
        verb, noun = ACTION_HEADS
        for k in (1, 5):
            out[f"action_top{k}"] = action_topk(
                scores[verb], scores[noun], labels[verb], labels[noun], k
            )
    return out


def evaluation_metrics(
    scores: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    subsets: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, float | int]:
    """All metrics of a model's per-clip class probabilities, overall and per named subset.

    One head gives plain keys (``top1``); several heads give ``<head>_top1`` and, for EPIC-100's
    verb and noun, ``action_top1``/``action_top5``. A subset (e.g. EPIC-100's unseen
    participants) repeats the keys with its name as prefix (``unseen_action_top1``).
    """
    out = _metrics_of(scores, labels)
    for name, members in (subsets or {}).items():
        rows = np.asarray(members, dtype=np.int64)
        if rows.size == 0:
            continue
        sub = _metrics_of(
            {h: s[rows] for h, s in scores.items()}, {h: y[rows] for h, y in labels.items()}
        )
        out.update({f"{name}_{key}": value for key, value in sub.items()})
    out["num_clips"] = len(next(iter(labels.values())))
    return out
