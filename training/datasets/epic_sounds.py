"""EPIC-Sounds (Huh et al., ICASSP 2023): 44 sound classes in EPIC-KITCHENS-100 recordings.

Official layout (``epic-sounds-annotations`` repository + the EPIC-KITCHENS-100 audio)::

    ROOT/EPIC_Sounds_train.csv          annotation_id, participant_id, video_id,
    ROOT/EPIC_Sounds_validation.csv     start_timestamp, stop_timestamp, start_sample,
                                        stop_sample, description, class, class_id
    ROOT/EPIC-KITCHENS-100_audio.hdf5   one 24 kHz dataset per video_id (e.g. ``P01_01``)

``start_sample``/``stop_sample`` index the video's HDF5 dataset. The ``.pkl`` versions of the
annotation files are read when there is no CSV. The recognition test split's labels are not
public, so the splits are train and validation. Class order: the CSVs' ``class_id``
(``arinext.model.labels.load_labels("epic_sounds")``).

Options: ``annotations_dir`` (default ``ROOT``), ``hdf5`` (default
``ROOT/EPIC-KITCHENS-100_audio.hdf5``), ``hdf5_rate`` (default 24000).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arinext.model.labels import load_labels
from arinext.training.datasets.base import (
    Clip,
    ClipIndex,
    DatasetError,
    find_annotations,
    read_annotation_table,
)

__all__ = ["EPIC_AUDIO", "HEAD", "epic_audio_file", "read"]

HEAD = "epic_sounds"
EPIC_AUDIO = "EPIC-KITCHENS-100_audio.hdf5"
_SPLITS = ("train", "validation")


def epic_audio_file(root: Path, options: dict[str, Any]) -> tuple[Path, int]:
    """The EPIC-KITCHENS-100 audio HDF5 and its sample rate (shared with EPIC-KITCHENS-100)."""
    path = Path(options.get("hdf5") or root / EPIC_AUDIO)
    if not path.is_file():
        raise DatasetError(f"{path}: missing (the EPIC-KITCHENS-100 audio HDF5; set data.hdf5)")
    return path, int(options.get("hdf5_rate", 24000))


def read(root: Path, split: str, options: dict[str, Any]) -> ClipIndex:
    """Clips of ``split`` (train or validation)."""
    if split not in _SPLITS:
        raise DatasetError(f"epic_sounds has {' and '.join(_SPLITS)} splits, not {split!r}")
    names = load_labels("epic_sounds")
    hdf5, rate = epic_audio_file(root, options)
    directory = Path(options.get("annotations_dir") or root)
    table = read_annotation_table(find_annotations(directory, f"EPIC_Sounds_{split}"))
    clips = []
    for row in table.itertuples(index=False):
        class_id = int(row.class_id)
        if not 0 <= class_id < len(names):
            raise DatasetError(f"epic_sounds: class_id {class_id} outside 0..{len(names) - 1}")
        clips.append(
            Clip(
                str(hdf5),
                (class_id,),
                key=str(row.video_id),
                start=int(row.start_sample),
                stop=int(row.stop_sample),
            )
        )
    return ClipIndex("epic_sounds", split, clips, {HEAD: names}, hdf5_rate=rate)
