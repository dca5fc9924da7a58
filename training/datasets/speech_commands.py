"""Google Speech Commands v2 (Warden, 2018): 35 words, one-second 16 kHz clips.

Official layout (``speech_commands_v0.02.tar.gz`` extracted)::

    ROOT/<word>/<speaker>_nohash_<n>.wav     one folder per word
    ROOT/_background_noise_/                 ignored
    ROOT/validation_list.txt                 relative paths, e.g. ``right/bb05582b_nohash_0.wav``
    ROOT/testing_list.txt

Training is every clip in neither list. With the option ``extra_classes: true`` (the default
model's recipe) two classes follow the 35 words, as in the keyword-spotting use of the dataset:
``_unknown_`` (the ``_unknown_`` folder, and any word folder outside the 35) and ``_silence_``
(the ``_silence_`` folder of non-speech clips).

The option ``recordings`` names a second folder in the same layout holding recorded speech (a
Speech Commands download or a subset of it, WAV or FLAC): its clips join each split by speaker
(:mod:`arinext.training.datasets.recordings`), repeated ``recordings_repeat`` times in the training
split so that a few thousand recordings weigh against tens of thousands of synthesised clips,
and the training part of its ``_background_noise_`` joins the noise pool. ``recordings_only``
leaves the root's own clips out (the held-out speakers alone).

``withhold_words`` (a list of the 35 words) leaves every clip of those words out of every split,
synthesised and recorded: a backbone that never heard them, for measuring what a few recordings
of a new word add (``arinext train-keywords --backbone``). Their classes stay in the head.

The authors' pickles (``SPEECH_CMD_V2_<split>.pkl``: ``video`` = file name, ``class`` = word
folder, ``class_id``) work too, via ``data.annotations_dir``.
Class order: ``arinext.model.labels.load_labels("speech_commands_v2")``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from arinext.model.labels import SILENCE, UNKNOWN, load_labels
from arinext.training.datasets import recordings
from arinext.training.datasets.base import (
    Clip,
    ClipIndex,
    DatasetError,
    label_lookup,
    read_annotation_table,
)

__all__ = ["EXTRA_CLASSES", "HEAD", "SILENCE", "UNKNOWN", "read"]

logger = logging.getLogger(__name__)

HEAD = "speech_commands"
_LISTS = {"validation": "validation_list.txt", "test": "testing_list.txt"}
EXTRA_CLASSES = (UNKNOWN, SILENCE)


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        raise DatasetError(f"{path}: missing (expected the official Speech Commands v2 layout)")
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def _from_pickle(root: Path, annotations_dir: Path, split: str, names: list[str]) -> list[Clip]:
    table = read_annotation_table(annotations_dir / f"SPEECH_CMD_V2_{split}.pkl")
    return [
        Clip(str(root / str(row["class"]) / str(row["video"])), (int(row["class_id"]),))
        for _, row in table.iterrows()
        if 0 <= int(row["class_id"]) < len(names)
    ]


def read(root: Path, split: str, options: dict[str, Any]) -> ClipIndex:
    """Clips of ``split`` (train, validation or test).

    Options: ``annotations_dir`` (folder with the authors' pickles) instead of the lists;
    ``extra_classes`` (add ``_unknown_`` and ``_silence_``); ``recordings``,
    ``recordings_repeat`` and ``recordings_only`` (recorded speech) and ``withhold_words``
    (see the module's docstring).
    """
    if split not in ("train", "validation", "test"):
        raise DatasetError(f"speech_commands has train, validation and test splits, not {split!r}")
    names = load_labels("speech_commands_v2")
    if options.get("annotations_dir"):
        listed = _from_pickle(root, Path(options["annotations_dir"]), split, names)
        return ClipIndex("speech_commands", split, listed, {HEAD: names})
    extra = bool(options.get("extra_classes"))
    if extra:
        names = [*names, *EXTRA_CLASSES]
    lookup = label_lookup(names, "speech_commands")
    withheld = _withheld(options.get("withhold_words") or [], names)
    clips: list[Clip] = []
    if not options.get("recordings_only"):
        clips = _official_split(root, split, lookup, extra)
    noise: list[Clip] = []
    if options.get("recordings"):
        folder = Path(options["recordings"])
        repeat = int(options.get("recordings_repeat", 1)) if split == "train" else 1
        clips += _recorded(folder, split, names, lookup, repeat)
        if split == "train":
            noise = _background(folder, train=True)
        elif split == "test" and SILENCE in lookup:
            clips += [
                Clip(c.path, (lookup[SILENCE],), start=c.start, stop=c.stop)
                for c in _background(folder, train=False)
            ]
    if withheld:
        before = len(clips)
        clips = [c for c in clips if not set(c.labels) & withheld]
        logger.info(
            "speech_commands/%s: %d clips of withheld words left out", split, before - len(clips)
        )
    return ClipIndex("speech_commands", split, clips, {HEAD: names}, noise=noise)


def _withheld(words: list[str], names: list[str]) -> set[int]:
    """Class indices of ``withhold_words``, which must be among the 35 words."""
    unknown = sorted(set(words) - set(names[:35]))
    if unknown:
        raise DatasetError(f"withhold_words: not Speech Commands words: {unknown}")
    return {names.index(word) for word in words}


def _official_split(root: Path, split: str, lookup: dict[str, int], extra: bool) -> list[Clip]:
    held_out = {name: _read_list(root / file) for name, file in _LISTS.items()}
    clips = []
    skipped = set()
    for wav in sorted(root.glob("*/*.wav")):
        word = wav.parent.name
        if word.startswith("_") and not (extra and word in EXTRA_CLASSES):
            continue  # _background_noise_
        if word not in lookup:
            if not extra:
                skipped.add(word)
                continue
            word = UNKNOWN
        rel = f"{wav.parent.name}/{wav.name}"
        in_split = next((name for name, files in held_out.items() if rel in files), "train")
        if in_split == split:
            clips.append(Clip(str(wav), (lookup[word],)))
    if skipped:
        logger.warning("speech_commands: ignoring folders not in the 35 words: %s", sorted(skipped))
    return clips


def _recorded(
    folder: Path, split: str, names: list[str], lookup: dict[str, int], repeat: int
) -> list[Clip]:
    """The recordings of ``split``'s speakers, each ``repeat`` times."""
    clips = []
    for clip in recordings.list_recordings(folder, split):
        label = recordings.label_of(clip.word, names)
        if label in lookup:
            clips += [Clip(str(clip.path), (lookup[label],))] * repeat
    logger.info("speech_commands/%s: %d recorded clips from %s", split, len(clips), folder)
    return clips


def _background(folder: Path, *, train: bool) -> list[Clip]:
    """Background recordings: the first part of each whole (the training noise pool), or the
    held-out rest in one-second windows (room noise the model must not answer as a word)."""
    import soundfile as sf

    out = []
    for path in recordings.background_recordings(folder):
        info = sf.info(str(path))
        cut = int(info.frames * recordings.NOISE_TRAIN_FRACTION)
        if train:
            out.append(Clip(str(path), (), start=0, stop=cut))
            continue
        step = info.samplerate  # one-second windows, end to end
        out += [
            Clip(str(path), (), start=start, stop=start + step)
            for start in range(cut, info.frames - step + 1, step)
        ]
    return out
