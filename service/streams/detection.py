"""Keyword detections from a stream's windows: one per utterance, never for "no keyword"."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.streams.protocol import is_keyword

__all__ = ["Debouncer", "Detection"]


@dataclass
class Detection:
    """A keyword heard: the window that first crossed the threshold."""

    head: str
    label: str
    score: float
    start: float
    end: float


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
