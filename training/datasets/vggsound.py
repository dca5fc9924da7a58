"""VGG-Sound (Chen et al., ICASSP 2020): ~200k 10-second YouTube clips, 309 classes.

Official layout: ``vggsound.csv`` (no header: YouTube id, start second, label, train/test) and
the audio you extracted from the videos, 16 kHz mono, one file per row named
``<ytid>_<start:06d>.wav`` (the common convention, e.g. ``---g-f_I2yQ_000001.wav``) or
``<ytid>_<start>.wav``; ``.flac`` works too. Files may sit in sub-folders (``train/``,
``test/``...): the audio folder is searched recursively. Rows whose video could not be
downloaded (every copy of VGG-Sound misses some) are skipped with a warning.

Options: ``csv`` (default ``ROOT/vggsound.csv``), ``audio_dir`` (default ``ROOT/audio`` when it
exists, else ``ROOT``), ``annotations_dir``: the authors' pickles ``train.pkl``/``test.pkl``
(``video`` = file stem, ``class``, ``class_id``) instead of the CSV.
Class order: ``arinext.model.labels.load_labels("vggsound")`` (the authors' class_id order).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from arinext.model.labels import load_labels
from arinext.training.datasets.base import (
    Clip,
    ClipIndex,
    DatasetError,
    label_lookup,
    read_annotation_table,
)

__all__ = ["HEAD", "read"]

logger = logging.getLogger(__name__)

HEAD = "vggsound"
_AUDIO_SUFFIXES = (".wav", ".flac")


def _index_audio(audio_dir: Path) -> dict[str, Path]:
    """File stem -> path for every audio file under ``audio_dir``."""
    files: dict[str, Path] = {}
    for path in audio_dir.rglob("*"):
        if path.suffix.lower() in _AUDIO_SUFFIXES:
            files.setdefault(path.stem, path)
    return files


def _stems(ytid: str, start: int) -> list[str]:
    """File stems a clip may have been saved under."""
    return [f"{ytid}_{start:06d}", f"{ytid}_{start}"]


def _stems_of_video(video: str) -> list[str]:
    """The authors' ``video`` value plus the two naming conventions of the same clip."""
    stem = Path(video).stem
    match = re.fullmatch(r"(.+)_(\d+)", stem)
    return [stem, *_stems(match[1], int(match[2]))] if match else [stem]


def _rows_from_csv(csv_path: Path, split: str) -> list[tuple[list[str], str]]:
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path}: missing (the official vggsound.csv)")
    table = pd.read_csv(
        csv_path, header=None, names=["ytid", "start", "label", "split"], dtype={"ytid": str}
    )
    rows = table[table["split"].str.strip() == split]
    return [
        (_stems(r.ytid, int(r.start)), str(r.label).strip()) for r in rows.itertuples(index=False)
    ]


def read(root: Path, split: str, options: dict[str, Any]) -> ClipIndex:
    """Clips of ``split`` (train or test; VGG-Sound has no validation split)."""
    if split not in ("train", "test"):
        raise DatasetError(f"vggsound has train and test splits, not {split!r}")
    names = load_labels("vggsound")
    lookup = label_lookup(names, "vggsound")
    default_audio = root / "audio" if (root / "audio").is_dir() else root
    audio_dir = Path(options.get("audio_dir") or default_audio)
    files = _index_audio(audio_dir)
    if options.get("annotations_dir"):
        table = read_annotation_table(Path(options["annotations_dir"]) / f"{split}.pkl")
        rows = [
            (_stems_of_video(str(video)), int(class_id))
            for video, class_id in zip(table["video"], table["class_id"], strict=True)
        ]
    else:
        rows = []
        for stems, label in _rows_from_csv(
            Path(options.get("csv") or root / "vggsound.csv"), split
        ):
            if label not in lookup:
                raise DatasetError(f"vggsound: unknown label {label!r} in the CSV")
            rows.append((stems, lookup[label]))
    clips: list[Clip] = []
    missing = 0
    for stems, class_id in rows:
        path = next((files[s] for s in stems if s in files), None)
        if path is None:
            missing += 1
        else:
            clips.append(Clip(str(path), (class_id,)))
    if missing:
        logger.warning(
            "vggsound/%s: %d annotated clips have no audio file in %s (skipped)",
            split,
            missing,
            audio_dir,
        )
    return ClipIndex("vggsound", split, clips, {HEAD: names})
