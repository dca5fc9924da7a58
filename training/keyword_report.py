"""What a keyword spotter's user cares about, from per-clip probabilities.

Top-1 over all classes hides the two ways a keyword model fails people: missing a word that was
said, and answering a word that was not (a false alarm on other speech or on noise). This
report gives top-1 on the keywords alone, the false-alarm rate on everything that is not a
keyword (``_unknown_`` speech and ``_silence_``), both per voice, top-1 per keyword (which words
a new voice loses), and the most frequent confusions. numpy only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from arinext.model.labels import is_keyword

__all__ = ["FALSE_ALARM_SCORE", "keyword_report", "voice_of"]

# A keyword answered with at least this probability counts as a detection (issue #9's bar).
FALSE_ALARM_SCORE = 0.5


def voice_of(path: str, voice_by_hash: Mapping[str, str]) -> str:
    """The voice of a ``<voicehash>_nohash_<k>.wav`` clip, by the dataset's recipe."""
    speaker = Path(path).name.split("_nohash_")[0]
    return voice_by_hash.get(speaker, speaker)


def keyword_report(
    probs: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    voices: Sequence[str],
    *,
    threshold: float = FALSE_ALARM_SCORE,
    confusions: int = 10,
) -> dict:
    """Keyword top-1, false alarms and confusions, overall and per voice; top-1 per keyword.

    ``probs`` is (clips, classes) in ``names`` order, ``labels`` the true class indices and
    ``voices`` each clip's voice.
    """
    keyword = np.array([is_keyword(n) for n in names])
    predicted = probs.argmax(axis=1)
    score = probs[np.arange(len(probs)), predicted]
    said = keyword[labels]
    alarm = ~said & keyword[predicted] & (score >= threshold)
    correct = predicted == labels

    def rate(mask: np.ndarray, of: np.ndarray) -> float | None:
        return float(mask[of].mean()) if of.any() else None

    voices_arr = np.asarray(voices)
    per_voice = {}
    for voice in sorted(set(voices)):
        mine = voices_arr == voice
        per_voice[voice] = {
            "keyword_top1": rate(correct, mine & said),
            "false_alarm_rate": rate(alarm, mine & ~said),
            "clips": int(mine.sum()),
        }
    per_keyword = {
        name: {"top1": rate(correct, labels == i), "clips": int((labels == i).sum())}
        for i, name in enumerate(names)
        if keyword[i] and (labels == i).any()
    }
    errors = Counter((names[t], names[p]) for t, p in zip(labels, predicted, strict=True) if t != p)
    by_class = {name: rate(alarm, labels == i) for i, name in enumerate(names) if not keyword[i]}
    return {
        "top1": float(correct.mean()) if len(correct) else None,
        "keyword_top1": rate(correct, said),
        "keyword_clips": int(said.sum()),
        "false_alarm_rate": rate(alarm, ~said),
        "false_alarm_threshold": threshold,
        "false_alarm_by_class": {k: v for k, v in by_class.items() if v is not None},
        "non_keyword_clips": int((~said).sum()),
        "per_voice": per_voice,
        "per_keyword": per_keyword,
        "confusions": [
            {"true": t, "predicted": p, "count": n} for (t, p), n in errors.most_common(confusions)
        ],
    }
