"""Keyword top-1, false alarms and confusions, on probabilities built by hand."""

from __future__ import annotations

import numpy as np
import pytest

from arinext.training.keyword_report import keyword_report, voice_of

NAMES = ["yes", "no", "_unknown_", "_silence_"]


def _probs(rows: list[tuple[int, float]]) -> np.ndarray:
    """One row per clip: the predicted class and its probability (the rest spread evenly)."""
    out = np.zeros((len(rows), len(NAMES)))
    for i, (cls, p) in enumerate(rows):
        out[i] = (1 - p) / (len(NAMES) - 1)
        out[i, cls] = p
    return out


def test_counts_misses_alarms_and_confusions() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    probs = _probs(
        [
            (0, 0.9),  # yes -> yes
            (1, 0.8),  # yes -> no (miss)
            (1, 0.7),  # no -> no
            (1, 0.6),  # no -> no
            (0, 0.7),  # unknown -> yes at 0.7: a false alarm
            (1, 0.4),  # unknown -> no at 0.4: below the bar, no alarm
            (3, 0.9),  # silence -> silence
            (0, 0.55),  # silence -> yes at 0.55: a false alarm
        ]
    )
    voices = ["a", "a", "a", "b", "b", "b", "none", "none"]
    report = keyword_report(probs, labels, NAMES, voices)
    assert report["keyword_top1"] == pytest.approx(3 / 4)
    assert report["top1"] == pytest.approx(4 / 8)
    assert report["false_alarm_rate"] == pytest.approx(2 / 4)
    assert report["false_alarm_by_class"] == {"_unknown_": 0.5, "_silence_": 0.5}
    assert report["per_voice"]["a"] == {"keyword_top1": 2 / 3, "false_alarm_rate": None, "clips": 3}
    assert report["per_voice"]["b"]["false_alarm_rate"] == pytest.approx(1 / 2)
    assert report["per_keyword"] == {
        "yes": {"top1": 0.5, "clips": 2},
        "no": {"top1": 1.0, "clips": 2},
    }
    assert report["confusions"][0]["count"] == 1
    pairs = {(c["true"], c["predicted"]) for c in report["confusions"]}
    assert pairs == {("yes", "no"), ("_unknown_", "yes"), ("_unknown_", "no"), ("_silence_", "yes")}


def test_voice_of_reads_the_speaker_hash() -> None:
    assert voice_of("/d/yes/ab12cd34_nohash_3.wav", {"ab12cd34": "flite:slt"}) == "flite:slt"
    assert voice_of("/d/yes/ffffffff_nohash_0.wav", {}) == "ffffffff"
