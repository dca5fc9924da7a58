"""Keyword detections from window scores: one per utterance, never for "no keyword".

The one detector of the service: the live stream feeds it window by window, and a recording's
windows (``/classify``, ``/v2``, ``arinext predict``, the Python ``Classifier``) go through it in
order, so a recording and the same audio streamed report the same words at the same times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, Field

from model.labels import is_keyword

__all__ = [
    "DEFAULT_HOP_SECONDS",
    "DEFAULT_THRESHOLD",
    "Debouncer",
    "Detection",
    "KeywordEvent",
    "detect",
    "heard",
]

# Window step of a stream, and of a recording longer than one window: a word is then whole in
# at least one window wherever it falls.
DEFAULT_HOP_SECONDS = 0.25
# Score a window's top keyword needs to count as heard.
DEFAULT_THRESHOLD = 0.7


class KeywordEvent(BaseModel):
    """A keyword heard in a recording: the first window that crossed the threshold."""

    label: str
    score: float
    start: float = Field(description="seconds: start of the window that heard it")
    end: float = Field(description="seconds: end of that window")


@dataclass
class Detection:
    """A keyword heard: the window that first crossed the threshold."""

    head: str
    label: str
    score: float
    start: float
    end: float

    def event(self) -> KeywordEvent:
        return KeywordEvent(label=self.label, score=self.score, start=self.start, end=self.end)


@dataclass
class Debouncer:
    """Turns one head's per-window winners into one detection per utterance.

    A window votes for its top label when that label is a keyword and scores at least
    ``threshold``. A vote detects the word unless the same word had a vote less than
    ``debounce`` seconds of windows earlier (then it is the same utterance, heard again by an
    overlapping window). Other words voted in between do not split an utterance.
    """

    head: str
    hop: float
    threshold: float
    debounce: float
    _last_vote: dict[str, float] = field(default_factory=dict)

    def update(self, label: str, score: float, start: float, end: float) -> Detection | None:
        """Feed the next window's winner; a :class:`Detection` when a new utterance begins."""
        if not is_keyword(label) or score < self.threshold:
            return None
        previous = self._last_vote.get(label)
        self._last_vote[label] = end
        # Seconds of windows since that vote (consecutive windows are one hop apart: no gap).
        if previous is not None and end - previous - self.hop < self.debounce - 1e-9:
            return None
        return Detection(self.head, label, score, start, end)


def detect(
    head: str,
    labels: Sequence[str],
    probs: np.ndarray,
    spans: Sequence[tuple[float, float]],
    *,
    hop: float,
    threshold: float,
    debounce: float,
) -> list[Detection]:
    """The detections of a recording's windows (``probs``: windows x classes, in time order)."""
    gate = Debouncer(head, hop, threshold, debounce)
    top = probs.argmax(axis=1)
    found = (
        gate.update(labels[int(t)], float(p[t]), start, end)
        for t, p, (start, end) in zip(top, probs, spans, strict=True)
    )
    return [d for d in found if d is not None]


def heard(events: Sequence[KeywordEvent]) -> str:
    """``yes at 1.50 s, stop at 4.25 s`` (each word at the middle of the window that heard it:
    within half a window of where it was said), or ``no keyword``."""
    if not events:
        return "no keyword"
    return ", ".join(f"{e.label} at {(e.start + e.end) / 2:.2f} s" for e in events)
