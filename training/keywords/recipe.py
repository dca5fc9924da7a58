"""The knobs of a keyword run (recorded in the artifact's manifest) and what a run returns."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["HeadKind", "KeywordRecipe", "KeywordResult", "ProgressCallback", "head_name"]

# Called as (stage, done, total) while a stage runs: synthesis, augmentation, embedding, training.
ProgressCallback = Callable[[str, int, int], None]
# The head on a stage's feature map (:class:`arinext.training.keywords.head.KeywordHead`).
HeadKind = Literal["linear", "temporal"]


@dataclass(frozen=True)
class KeywordRecipe:
    """Every knob of a keyword run; recorded in the artifact's manifest."""

    seed: int = 0
    per_phrase: int = 480  # espeak-ng renditions of each phrase by training voices
    held_out_per_phrase: int = 16  # ... by held-out voice variants, for the summary
    vocabulary: int = 240  # _unknown_: ordinary words and short phrases
    near_misses: int = 40  # _unknown_ per phrase: its words alone, or one word swapped
    command_words: int = 2  # renditions of each of the 35 Speech Commands words, as _unknown_
    silence: int = 80  # non-speech clips
    copies: int = 3  # augmented views of every synthesised clip
    recording_copies: int = 40  # augmented views of every recording of the user
    head: HeadKind = "temporal"
    stages: int = 3  # backbone stages the head reads the output of (the shipped model has 4)
    hidden: int = 128  # channels of the temporal head's convolution
    dropout: float = 0.5
    tune: Literal["head", "last-stage"] = "head"  # last-stage: also the last of ``stages``
    epochs: int = 40
    lr: float = 3e-3
    stage_lr: float = 3e-4
    label_smoothing: float = 0.1
    margin_s: float = 0.25  # silence around the 95th-percentile phrase in the window
    min_window_s: float = 1.0
    int8: bool = True
    foreign_fraction: float = 0.15
    rate_wpm: tuple[int, int] = (120, 220)
    pitch: tuple[int, int] = (20, 80)
    amplitude: tuple[int, int] = (60, 160)


@dataclass
class KeywordResult:
    """What a run wrote and measured."""

    artifact: Path
    labels: list[str]
    window_seconds: float
    precision: str
    seconds: float
    held_out: dict[str, Any] = field(default_factory=dict)


def head_name(artifact_name: str) -> str:
    """The artifact's one head (the phrases, ``_unknown_`` and ``_silence_``), named after the
    artifact: the server refuses two heads of one name, so two keyword models can serve side by
    side only if their heads differ."""
    name = re.sub(r"\W", "_", artifact_name)
    return name if name.isidentifier() else f"keywords_{name}"
