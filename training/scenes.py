"""Ten-second validation scenes for live detection: recorded keywords over recorded room noise.

A scene is what an always-on microphone hears: a stretch of a held-out background recording (the
part of ``_background_noise_`` never used for training, or ``_silence_`` clips of held-out rooms)
with three keywords said by held-out speakers, each at a signal-to-noise ratio drawn from 15-30 dB,
at positions that leave at least a second between words. Each keyword's whole one-second
recording goes in (a gate would cut its quiet consonants); the ground truth is where its voice is
(frames within 40 dB of its loudest), so a detection can be matched to its word.

Scenes are built in memory from a recordings folder (:mod:`arinext.training.datasets.recordings`)
and never written into the repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arinext.model.audio_io import read_file
from arinext.model.labels import SILENCE
from arinext.training.datasets.recordings import (
    NOISE_TRAIN_FRACTION,
    background_recordings,
    list_recordings,
)
from arinext.training.waveform_augment import rms

__all__ = ["Scene", "Word", "build_scenes", "match_detections", "voiced_span"]

RATE = 16000
SNR_DB = (15.0, 30.0)


@dataclass(frozen=True)
class Word:
    """A keyword said in a scene: its label and where its voice is, in seconds."""

    label: str
    start: float
    end: float


@dataclass(frozen=True)
class Scene:
    """A scene's audio (float32 at 16 kHz) and the words said in it."""

    samples: np.ndarray
    words: tuple[Word, ...]

    @property
    def seconds(self) -> float:
        return self.samples.size / RATE


def _read(path: Path) -> np.ndarray:
    samples, rate = read_file(path)
    if rate != RATE:
        raise ValueError(f"{path}: {rate} Hz; scenes are built from 16 kHz recordings")
    return samples


def voiced_span(samples: np.ndarray, below_peak_db: float = 40.0) -> tuple[int, int]:
    """First and last sample of the voice: 10 ms frames within ``below_peak_db`` of the loudest."""
    frame = RATE // 100
    usable = samples[: samples.size // frame * frame].reshape(-1, frame)
    energy = 10 * np.log10(np.mean(usable**2, axis=1) + 1e-12)
    loud = np.flatnonzero(energy >= energy.max() - below_peak_db)
    return int(loud[0] * frame), int((loud[-1] + 1) * frame)


def _backgrounds(folder: Path, seconds: float) -> list[np.ndarray]:
    """Held-out room noise at least ``seconds`` long: the tail of each background recording,
    and the held-out ``_silence_`` clips end to end."""
    need = int(seconds * RATE)
    out = []
    for path in background_recordings(folder):
        audio = _read(path)
        tail = audio[int(audio.size * NOISE_TRAIN_FRACTION) :]
        if tail.size >= need:
            out.append(tail)
    rooms = [_read(c.path) for c in list_recordings(folder, "test") if c.word == SILENCE]
    if rooms:
        joined = np.concatenate(rooms)
        out += [joined[i : i + need] for i in range(0, joined.size - need + 1, need)]
    return out


def build_scenes(
    folder: Path | str,
    count: int,
    *,
    seconds: float = 10.0,
    words_per_scene: int = 3,
    split: str = "test",
    seed: int = 0,
) -> list[Scene]:
    """``count`` scenes from the recordings of ``split``'s speakers, reproducible for a seed."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    said = [c for c in list_recordings(folder, split) if c.word != SILENCE]
    backgrounds = _backgrounds(folder, seconds)
    if not said or not backgrounds:
        raise ValueError(f"{folder}: no {split} speakers' words or no held-out room noise")
    n = int(seconds * RATE)
    scenes = []
    for _ in range(count):
        source = backgrounds[int(rng.integers(len(backgrounds)))]
        offset = int(rng.integers(0, source.size - n + 1))
        noise = source[offset : offset + n].astype(np.float32)
        scene = noise.copy()
        # One slot per word, a clip (1 s) plus the gap wide; the word starts anywhere in it.
        slot = n // words_per_scene
        words = []
        for k in range(words_per_scene):
            clip = said[int(rng.integers(len(said)))]
            audio = _read(clip.path)[:slot]
            begin, end = voiced_span(audio)
            # Half a second of margin at both ends of the slot: a second between clips.
            room = max(slot - audio.size - RATE, 0)
            at = k * slot + RATE // 2 + int(rng.integers(0, room + 1))
            audio = audio[: n - at]
            snr = rng.uniform(*SNR_DB)
            voice = audio[begin:end]
            level = rms(noise)
            gain = level * 10 ** (snr / 20) / max(rms(voice), 1e-9) if level > 1e-6 else 1.0
            # Not capped to keep the word's own peak under 1: over a loud background that would
            # lower its SNR far below the draw. The whole scene is scaled into range below.
            scene[at : at + audio.size] += audio * gain
            words.append(Word(clip.word, (at + begin) / RATE, (at + min(end, audio.size)) / RATE))
        peak = np.abs(scene).max()
        if peak > 1.0:  # every part alike, so each word keeps its SNR
            scene /= peak
        scenes.append(Scene(scene.astype(np.float32), tuple(words)))
    return scenes


def match_detections(
    words: tuple[Word, ...], detections: list[tuple[str, float, float]]
) -> tuple[int, int]:
    """(words detected, wrong detections): a detection ``(label, start, end)`` finds a word of
    its label whose voice its window overlaps; each word is found once, the rest are wrong."""
    found: set[int] = set()
    wrong = 0
    for label, start, end in detections:
        hit = next(
            (
                i
                for i, w in enumerate(words)
                if i not in found and w.label == label and start < w.end and w.start < end
            ),
            None,
        )
        if hit is None:
            wrong += 1
        else:
            found.add(hit)
    return len(found), wrong
