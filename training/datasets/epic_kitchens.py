"""EPIC-KITCHENS-100 action recognition from audio (Damen et al., IJCV 2022): verb + noun heads.

Official layout (``epic-kitchens-100-annotations`` repository + the audio HDF5)::

    ROOT/EPIC_100_train.csv             narration_id, participant_id, video_id,
    ROOT/EPIC_100_validation.csv        start_timestamp, stop_timestamp (HH:MM:SS.ff),
                                        verb_class, noun_class, ...
    ROOT/EPIC_100_verb_classes.csv      id, key, ...  (97 verbs: the verb head's names)
    ROOT/EPIC_100_noun_classes.csv      id, key, ...  (300 nouns)
    ROOT/EPIC_100_unseen_participant_ids_validation.csv   optional: participant_id
    ROOT/EPIC-KITCHENS-100_audio.hdf5   one 24 kHz dataset per video_id

The ``.pkl`` annotation files (what the authors load) are read when there is no CSV. Segments
are cut from the video's HDF5 recording at the timestamps. When the unseen-participants list is
present, metrics are also reported on those participants (``unseen_*``). Test labels are not
public, so the splits are train and validation.

Options: ``annotations_dir`` (default ``ROOT``), ``hdf5``, ``hdf5_rate`` (as EPIC-Sounds).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from arinext.model.labels import load_labels
from arinext.training.datasets.base import (
    Clip,
    ClipIndex,
    DatasetError,
    find_annotations,
    read_annotation_table,
)
from arinext.training.datasets.epic_sounds import epic_audio_file

__all__ = ["read", "timestamp_seconds"]

logger = logging.getLogger(__name__)

_SPLITS = ("train", "validation")
_UNSEEN = "EPIC_100_unseen_participant_ids_validation.csv"


def timestamp_seconds(stamp: str) -> float:
    """``HH:MM:SS.ff`` -> seconds."""
    hours, minutes, seconds = str(stamp).strip().split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _class_names(directory: Path, head: str, count: int) -> list[str]:
    """Names by class id from the dataset's own class CSV (bundled partial list as fallback)."""
    path = directory / f"EPIC_100_{head}_classes.csv"
    if not path.is_file():
        logger.warning("%s missing: using the bundled (partial) %s names", path, head)
        return load_labels(f"epic_kitchens_100_{head}")
    table = pd.read_csv(path)
    names = dict(zip(table["id"].astype(int), table["key"].astype(str), strict=True))
    if sorted(names) != list(range(count)):
        raise DatasetError(f"{path}: expected ids 0..{count - 1}")
    return [names[i] for i in range(count)]


def read(root: Path, split: str, options: dict[str, Any]) -> ClipIndex:
    """Clips of ``split`` (train or validation) with (verb, noun) labels."""
    if split not in _SPLITS:
        raise DatasetError(f"epic_kitchens_100 has train and validation splits, not {split!r}")
    hdf5, rate = epic_audio_file(root, options)
    directory = Path(options.get("annotations_dir") or root)
    heads = {
        "verb": _class_names(directory, "verb", 97),
        "noun": _class_names(directory, "noun", 300),
    }
    table = read_annotation_table(find_annotations(directory, f"EPIC_100_{split}"))
    unseen_path = directory / _UNSEEN
    unseen = (
        set(pd.read_csv(unseen_path)["participant_id"].astype(str))
        if unseen_path.is_file()
        else set()
    )
    clips: list[Clip] = []
    unseen_rows: list[int] = []
    for row in table.itertuples(index=False):
        start = round(timestamp_seconds(row.start_timestamp) * rate)
        stop = round(timestamp_seconds(row.stop_timestamp) * rate)
        if str(row.participant_id) in unseen:
            unseen_rows.append(len(clips))
        clips.append(
            Clip(
                str(hdf5),
                (int(row.verb_class), int(row.noun_class)),
                key=str(row.video_id),
                start=start,
                stop=max(stop, start + 1),
            )
        )
    subsets = {"unseen": unseen_rows} if unseen_rows else {}
    return ClipIndex("epic_kitchens_100", split, clips, heads, subsets, hdf5_rate=rate)
