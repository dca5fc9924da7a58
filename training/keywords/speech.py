"""What a keyword run says, and by which espeak-ng voice: every clip, from the recipe's seed.

Each phrase by the default model's voice variants, accents, rates, pitches and amplitudes
(:mod:`arinext.training.synth_speech`), whole variants held out to measure voices the head never
heard. The negatives (``_unknown_``) are ordinary words and short phrases
(:mod:`arinext.training.vocabulary`), near misses of the new phrases (their words alone, or with a
word swapped) and the 35 Speech Commands words; ``_silence_`` is non-speech.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arinext.model.labels import SILENCE, UNKNOWN, load_labels
from arinext.training.keywords.recipe import KeywordRecipe
from arinext.training.synth_speech import (
    ACCENTS,
    FOREIGN_ACCENTS,
    FOREIGN_UNKNOWN_ACCENTS,
    PLAIN_VARIANT,
    SAMPLE_RATE,
    derive_seed,
    list_variants,
    split_variants,
    synthesize,
    trim,
)
from arinext.training.vocabulary import TRAIN_WORDS

__all__ = ["Utterance", "normalise_phrase", "plan_speech", "read_recording", "speak"]

_TRIM_DB = 40.0


@dataclass(frozen=True)
class Utterance:
    """One clip to synthesise: ``text`` by an espeak-ng ``voice`` (empty: non-speech)."""

    text: str
    label: str
    voice: str
    rate: int
    pitch: int
    amplitude: int
    held_out: bool
    key: int


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def normalise_phrase(phrase: str) -> str:
    """Lower-case words separated by single spaces; a phrase without words is refused."""
    words = _words(phrase)
    if not words:
        raise ValueError(f"phrase {phrase!r} has no words")
    return " ".join(words)


def _contains(text: str, phrase: str) -> bool:
    return f" {phrase} " in f" {' '.join(_words(text))} "


def plan_speech(
    phrases: Sequence[str], recipe: KeywordRecipe, voice_seed: int = 0
) -> list[Utterance]:
    """Every synthesised clip of the run, reproducible from the recipe's seed.

    Voice variants are split with ``voice_seed``, the seed the backbone's own data was split
    with: the variants held out here are then ones the backbone never heard either, whatever
    the run's seed.
    """
    voices = split_variants(list_variants(), voice_seed, 0.1, 0.1)
    train, held = voices["train"], voices["validation"] + voices["test"]
    rng = np.random.default_rng(derive_seed(recipe.seed, "keywords", *phrases))
    vocabulary = [w for w in TRAIN_WORDS if not any(_contains(w, p) for p in phrases)]
    commands = [w for w in load_labels("speech_commands_v2") if w not in phrases]
    plan: list[Utterance] = []

    def add(text: str, label: str, held_out: bool, foreign: tuple[str, ...] = ()) -> None:
        variants = held if held_out else train
        variant = variants[int(rng.integers(len(variants)))]
        use_foreign = bool(foreign) and rng.random() < recipe.foreign_fraction
        accents = foreign if use_foreign else ACCENTS
        accent = accents[int(rng.integers(len(accents)))]
        plan.append(
            Utterance(
                text,
                label,
                accent if variant == PLAIN_VARIANT else f"{accent}+{variant}",
                int(rng.integers(recipe.rate_wpm[0], recipe.rate_wpm[1] + 1)),
                int(rng.integers(recipe.pitch[0], recipe.pitch[1] + 1)),
                int(rng.integers(recipe.amplitude[0], recipe.amplitude[1] + 1)),
                held_out,
                len(plan),
            )
        )

    def vocabulary_text() -> str:
        count = 1 if rng.random() < 0.67 else int(rng.integers(2, 4))
        return " ".join(vocabulary[int(i)] for i in rng.integers(len(vocabulary), size=count))

    for held_out, scale in ((False, 1.0), (True, recipe.held_out_per_phrase / recipe.per_phrase)):
        count = recipe.per_phrase if not held_out else recipe.held_out_per_phrase
        for phrase in phrases:
            for _ in range(count):
                add(phrase, phrase, held_out, FOREIGN_ACCENTS)
        for _ in range(_count(recipe.vocabulary, scale)):
            add(vocabulary_text(), UNKNOWN, held_out, FOREIGN_ACCENTS + FOREIGN_UNKNOWN_ACCENTS)
        for phrase in phrases:
            for text in _near_misses(phrase, phrases, vocabulary, rng, recipe.near_misses * scale):
                add(text, UNKNOWN, held_out, FOREIGN_ACCENTS)
        for word in commands:
            for _ in range(_count(recipe.command_words, scale)):
                add(word, UNKNOWN, held_out, FOREIGN_ACCENTS)
        for _ in range(_count(recipe.silence, scale)):
            plan.append(Utterance("", SILENCE, "", 0, 0, 0, held_out, len(plan)))
    return plan


def _count(wanted: float, scale: float) -> int:
    """``wanted`` scaled down for the held-out set, at least one unless none was wanted."""
    return max(1, round(wanted * scale)) if wanted > 0 else 0


def _near_misses(
    phrase: str,
    phrases: Sequence[str],
    vocabulary: Sequence[str],
    rng: np.random.Generator,
    count: float,
) -> list[str]:
    """Speech that shares most of ``phrase``: each word alone, or one word replaced."""
    words = phrase.split()
    found: list[str] = []
    for _ in range(_count(count, 1.0)):
        if len(words) == 1:
            text = vocabulary[int(rng.integers(len(vocabulary)))]
        elif rng.random() < 0.3:
            text = words[int(rng.integers(len(words)))]
        else:
            swapped = list(words)
            swapped[int(rng.integers(len(words)))] = vocabulary[int(rng.integers(len(vocabulary)))]
            text = " ".join(swapped)
        if not any(_contains(text, p) for p in phrases):
            found.append(text)
    return found


def speak(utterance: Utterance) -> np.ndarray:
    """The trimmed utterance (non-speech clips are made when placed, so empty here)."""
    if not utterance.text:
        return np.zeros(0, dtype=np.float32)
    samples = synthesize(
        utterance.text, utterance.voice, utterance.rate, utterance.pitch, utterance.amplitude
    )
    return trim(samples, _TRIM_DB).astype(np.float32)


def read_recording(path: Path) -> np.ndarray:
    """A recording of the user: mono, at the backbone's rate, trimmed like the synthesised."""
    from arinext.model.audio_io import read_file, resample

    samples, rate = read_file(path)
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    return trim(resample(samples.astype(np.float32), rate, SAMPLE_RATE), _TRIM_DB)
