"""Spoken test recordings made with espeak-ng: keywords between other speech and silence.

Generated rather than stored, so the tests carry no audio files and the words are known exactly:
each segment is rendered alone, trimmed of espeak-ng's padding and placed at a known time.
"""

from __future__ import annotations

import io
import itertools
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

__all__ = [
    "ESPEAK",
    "SAMPLE_RATE",
    "YES_STOP_GO",
    "Recording",
    "Segment",
    "keyword_recording",
    "say",
]

ESPEAK = "espeak-ng"
SAMPLE_RATE = 16000
_NOISE_RMS = 1e-3  # the "silence" of a quiet room (-60 dBFS), not digital zero


@dataclass(frozen=True)
class Segment:
    """What is said, from ``start`` to ``end`` seconds; ``keyword`` is a label of the model."""

    text: str
    start: float
    end: float
    keyword: bool


@dataclass(frozen=True)
class Recording:
    """Mono float32 audio at ``SAMPLE_RATE`` and where its segments lie."""

    samples: np.ndarray
    segments: list[Segment]

    @property
    def keywords(self) -> list[Segment]:
        """The keyword segments, in time order."""
        return [s for s in self.segments if s.keyword]

    def wav_bytes(self) -> bytes:
        """The recording as a 16-bit WAV file."""
        out = io.BytesIO()
        sf.write(out, self.samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        return out.getvalue()


def espeak_available() -> bool:
    """Whether espeak-ng is installed."""
    return shutil.which(ESPEAK) is not None


def say(text: str, voice: str = "en-us", words_per_minute: int = 150) -> np.ndarray:
    """``text`` spoken by espeak-ng at ``SAMPLE_RATE``, trimmed to the speech, peak 0.5."""
    wav = subprocess.run(
        [ESPEAK, "--stdout", "-v", voice, "-s", str(words_per_minute), text],
        capture_output=True,
        check=True,
    ).stdout
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
    samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    loud = np.flatnonzero(np.abs(samples) > 0.02 * np.abs(samples).max())
    samples = samples[loud[0] : loud[-1] + 1]
    return 0.5 * samples / np.abs(samples).max()


# (text, start second, is a keyword). Keywords are at least a second away from other speech, so
# some windows hold the keyword alone; silence opens and closes the recording.
_SCRIPT = (
    ("hello there", 0.5, False),
    ("stop", 2.8, True),
    ("seven", 4.4, True),
    ("open the door", 5.95, False),
    ("yes", 8.2, True),
)


# "yes ... stop ... go": three keywords and nothing else, a few seconds apart.
YES_STOP_GO = (("yes", 1.2, True), ("stop", 4.3, True), ("go", 7.5, True))


def keyword_recording(
    seconds: float = 10.0,
    seed: int = 0,
    script: tuple[tuple[str, float, bool], ...] = _SCRIPT,
) -> Recording:
    """Ten seconds of ``script`` (by default other speech and three keywords, stop, seven and
    yes), with silence between them."""
    rng = np.random.default_rng(seed)
    audio = rng.normal(0.0, _NOISE_RMS, round(seconds * SAMPLE_RATE)).astype(np.float32)
    segments = []
    for text, start, keyword in script:
        speech = say(text)
        offset = round(start * SAMPLE_RATE)
        audio[offset : offset + len(speech)] += speech
        segments.append(Segment(text, start, (offset + len(speech)) / SAMPLE_RATE, keyword))
    for before, after in itertools.pairwise(segments):
        assert after.start - before.end >= 0.9, f"{before.text!r} runs into {after.text!r}"
    assert segments[-1].end <= seconds - 1.0
    return Recording(audio, segments)
