"""Keyword detections from window scores: one per utterance, never for "no keyword".

The one detector of the service: the live stream feeds it window by window, and a recording's
windows (``/classify``, ``/v2``, ``arinext predict``, the Python ``Classifier``) go through it in
order, so a recording and the same audio streamed report the same words at the same times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
from pydantic import BaseModel, Field

from arinext.model.labels import is_keyword
from arinext.model.manifest import MAX_VOTES, Manifest, Threshold, Votes

__all__ = [
    "DEFAULT_HOP_SECONDS",
    "DEFAULT_THRESHOLD",
    "DEFAULT_VOTES",
    "MAX_DEBOUNCE_SECONDS",
    "MAX_VOTES",
    "Debounce",
    "Debouncer",
    "Detection",
    "DetectionParameters",
    "KeywordEvent",
    "Threshold",
    "Votes",
    "detect",
    "heard",
    "operating_point",
]

# Window step of a stream, and of a recording longer than one window: a word is then whole in
# at least one window wherever it falls.
DEFAULT_HOP_SECONDS = 0.25
# Consecutive windows that must agree on a word (see Debouncer), and the score one of them needs,
# for a model whose manifest has no tuned operating point (``detection``): the default model's,
# tuned together on held-out speakers, the most words found with at most one wrong detection a
# minute, the score no lower than 0.5, the line below which a keyword is no answer
# (docs/default-model.md, "Live detection").
DEFAULT_VOTES = 3
DEFAULT_THRESHOLD = 0.5
# A word heard again within this many seconds is one utterance; a request may set up to a minute.
MAX_DEBOUNCE_SECONDS = 60.0
Debounce = Annotated[float, Field(ge=0, le=MAX_DEBOUNCE_SECONDS)]


class DetectionParameters(BaseModel):
    """A request's own detection settings, within the bounds every entry point holds them to;
    ``None`` takes the model's (:func:`operating_point`) or, for ``debounce``, the window's."""

    threshold: Threshold | None = None
    votes: Votes | None = None
    debounce: Debounce | None = None


class KeywordEvent(BaseModel):
    """A keyword heard in a recording: the first window of the run of votes that detected it,
    with the run's best score."""

    label: str
    score: float
    start: float = Field(description="seconds: start of the window that heard it")
    end: float = Field(description="seconds: end of that window")


@dataclass
class Detection:
    """A keyword heard: the first window of the run of votes that detected it, with the run's
    best score (:class:`Debouncer`)."""

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

    Consecutive windows whose top label is the same keyword are one run of votes; the run
    detects the word once it has ``votes`` windows and one of them scored at least
    ``threshold``. A word said is heard by several overlapping windows, while the tail of other
    speech at the start of a single window (a window hears it as a short word) makes a short
    run, so more votes keep those out. The detection is the run's first window, with the run's
    best score. A run that begins less than ``debounce`` seconds of windows after the last vote
    of a run that detected the same word is that utterance, heard again.
    """

    head: str
    hop: float
    threshold: float
    debounce: float
    votes: int = DEFAULT_VOTES
    _last_vote: dict[str, float] = field(default_factory=dict)
    # The current run, in constant space however long it lasts (a sound the model keeps
    # calling one word, for an hour): its word, first window, votes and best score.
    _run_label: str | None = None
    _run_first: tuple[float, float] = (0.0, 0.0)
    _run_votes: int = 0
    _run_best: float = 0.0
    _run_detected: bool = False
    _run_repeats: bool = False

    def update(self, label: str, score: float, start: float, end: float) -> Detection | None:
        """Feed the next window's winner; a :class:`Detection` when a new utterance begins."""
        if not is_keyword(label):
            self._run_label = None
            return None
        if self._run_label != label:
            previous = self._last_vote.get(label)
            # Seconds of windows since that vote (consecutive windows are one hop apart).
            self._run_repeats = (
                previous is not None and end - previous - self.hop < self.debounce - 1e-9
            )
            self._run_label, self._run_first = label, (start, end)
            self._run_votes, self._run_best, self._run_detected = 0, score, False
        self._run_votes += 1
        self._run_best = max(self._run_best, score)
        if self._run_repeats or self._run_detected:
            self._last_vote[label] = end  # the utterance goes on
            return None
        if self._run_votes < self.votes or self._run_best < self.threshold:
            return None
        self._run_detected = True
        self._last_vote[label] = end
        return Detection(self.head, label, self._run_best, *self._run_first)


def operating_point(
    manifest: Manifest, threshold: float | None, votes: int | None
) -> tuple[float, int]:
    """The threshold and votes a request gets: its own, else the model's tuned ones, else the
    service's defaults."""
    tuned = manifest.detection
    if threshold is None:
        threshold = tuned.threshold if tuned is not None else DEFAULT_THRESHOLD
    if votes is None:
        votes = tuned.votes if tuned is not None else DEFAULT_VOTES
    return threshold, votes


def detect(
    head: str,
    labels: Sequence[str],
    probs: np.ndarray,
    spans: Sequence[tuple[float, float]],
    *,
    hop: float,
    threshold: float,
    debounce: float,
    votes: int = DEFAULT_VOTES,
) -> list[Detection]:
    """The detections of a recording's windows (``probs``: windows x classes, in time order)."""
    # A recording of one window (a clip no longer than the model's input) has one vote to give.
    gate = Debouncer(head, hop, threshold, debounce, votes=min(votes, len(spans)))
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
