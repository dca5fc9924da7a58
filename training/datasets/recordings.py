"""Recorded speech in the Speech Commands layout, split by speaker, for the default model.

A folder laid out as Google's Speech Commands (Warden 2018, CC BY 4.0) is
``<word>/<speaker>_nohash_<n>.(wav|flac)``, ``_silence_/`` (room noise, one second each) and
``_background_noise_/`` (long recordings of rooms and noise). It may be a full download of the
dataset or a subset of it (``../shared/speech_commands_subset`` beside this checkout). The files are
read where they are, never copied.

Clips are split **by speaker** (the hash before ``_nohash_``), so a speaker's every word lands in
one split and held-out scores measure people the model never heard. The split of a speaker is a
function of the hash alone (as Speech Commands' own ``which_set``), so adding or removing clips
never moves a speaker. ``_silence_`` clips have no speaker: each file name is hashed instead. Each
``_background_noise_`` recording is cut in two: its first 80 % feeds the training noise pool, the
rest is held out to measure false accepts on room noise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from arinext.model.labels import SILENCE, UNKNOWN
from arinext.training.config import UserError

__all__ = [
    "AUDIO_SUFFIXES",
    "BACKGROUND",
    "NOISE_TRAIN_FRACTION",
    "RecordedClip",
    "RecordingsMissingError",
    "background_recordings",
    "list_recordings",
    "require_recordings",
    "speaker_of",
    "split_of",
]

AUDIO_SUFFIXES = (".wav", ".flac")
BACKGROUND = "_background_noise_"
# Percent of speakers in each held-out split; the rest train.
VALIDATION_PERCENT = 10
TEST_PERCENT = 20
NOISE_TRAIN_FRACTION = 0.8

WHERE_TO_GET = (
    "Download Google Speech Commands v0.02 (Warden 2018, CC BY 4.0) from "
    "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz, extract it, and pass "
    "its folder (make default-model DEFAULT_MODEL_RECORDINGS=/path/to/speech_commands)"
)


class RecordingsMissingError(UserError):
    """The recordings folder is not there or holds no word clips."""


@dataclass(frozen=True, slots=True)
class RecordedClip:
    """One recording: its file, its folder's word (or ``_silence_``) and its speaker."""

    path: Path
    word: str
    speaker: str


def speaker_of(path: Path) -> str:
    """The speaker hash of ``<speaker>_nohash_<n>.flac``; the file's stem when there is none."""
    stem = path.stem
    return stem.split("_nohash_")[0] if "_nohash_" in stem else stem


def split_of(speaker: str) -> str:
    """``train``, ``validation`` or ``test`` for a speaker, from a hash of the speaker alone."""
    bucket = int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16) % 100
    if bucket < VALIDATION_PERCENT:
        return "validation"
    if bucket < VALIDATION_PERCENT + TEST_PERCENT:
        return "test"
    return "train"


def require_recordings(root: Path | str) -> Path:
    """``root`` as a Path, or a clear error saying where to get Speech Commands."""
    path = Path(root)
    if not path.is_dir():
        raise RecordingsMissingError(f"recorded speech folder {path} not found. {WHERE_TO_GET}.")
    if not any(
        clip.suffix.lower() in AUDIO_SUFFIXES
        for folder in path.iterdir()
        if folder.is_dir() and not folder.name.startswith("_")
        for clip in folder.iterdir()
    ):
        raise RecordingsMissingError(
            f"{path} holds no <word>/*.wav or *.flac clips. {WHERE_TO_GET}."
        )
    return path


def list_recordings(root: Path | str, split: str | None = None) -> list[RecordedClip]:
    """Word and ``_silence_`` clips of the folder (of one split when given), sorted by path.

    Folders starting with ``_`` other than ``_silence_`` (``_background_noise_``) are not clips.
    """
    path = require_recordings(root)
    clips = []
    for folder in sorted(p for p in path.iterdir() if p.is_dir()):
        if folder.name.startswith("_") and folder.name != SILENCE:
            continue
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in AUDIO_SUFFIXES:
                continue
            clip = RecordedClip(file, folder.name, speaker_of(file))
            if split is None or split_of(clip.speaker) == split:
                clips.append(clip)
    return clips


def background_recordings(root: Path | str) -> list[Path]:
    """The long noise recordings of ``_background_noise_`` (none when the folder is absent)."""
    folder = Path(root) / BACKGROUND
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)


def label_of(word: str, names: list[str]) -> str:
    """The class a folder's clips belong to: the word, ``_silence_``, or ``_unknown_``."""
    return word if word in names else UNKNOWN


def main(argv: list[str] | None = None) -> int:
    """``python -m arinext.training.datasets.recordings DIR``: check a folder before a recipe."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    try:
        clips = list_recordings(args[0])
    except (UserError, IndexError) as error:
        sys.stderr.write(f"error: {error or 'usage: recordings DIR'}\n")
        return 2
    speakers: dict[str, set[str]] = {split: set() for split in ("train", "validation", "test")}
    for clip in clips:
        if clip.word != SILENCE:
            speakers[split_of(clip.speaker)].add(clip.speaker)
    sys.stderr.write(
        f"{args[0]}: {len(clips)} clips; speakers "
        + ", ".join(f"{split} {len(names)}" for split, names in speakers.items())
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
