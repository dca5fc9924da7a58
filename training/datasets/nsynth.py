"""NSynth (Engel et al., 2017): 4-second 16 kHz notes, classified by instrument family (11).

Official layout (the three ``nsynth-*.jsonwav.tar.gz`` archives extracted side by side)::

    ROOT/nsynth-train/examples.json    {note_str: {"instrument_family": int, ...}, ...}
    ROOT/nsynth-train/audio/<note_str>.wav
    ROOT/nsynth-valid/...
    ROOT/nsynth-test/...

Splits train, validation (``nsynth-valid``) and test. Option ``annotations_dir``: the authors'
pickles ``Nsynth-{train,valid,test}.pkl`` (``video`` = note name, ``class_id``) instead of
``examples.json``. Class order: ``instrument_family`` (bass, brass, ... vocal).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from arinext.model.labels import load_labels
from arinext.training.datasets.base import Clip, ClipIndex, DatasetError, read_annotation_table

__all__ = ["HEAD", "read"]

HEAD = "nsynth"
_FOLDERS = {"train": "train", "validation": "valid", "test": "test"}


def read(root: Path, split: str, options: dict[str, Any]) -> ClipIndex:
    """Clips of ``split`` (train, validation or test)."""
    if split not in _FOLDERS:
        raise DatasetError(f"nsynth has train, validation and test splits, not {split!r}")
    names = load_labels("nsynth")
    folder = root / f"nsynth-{_FOLDERS[split]}"
    if options.get("annotations_dir"):
        path = Path(options["annotations_dir"]) / f"Nsynth-{_FOLDERS[split]}.pkl"
        table = read_annotation_table(path)
        notes = dict(zip(table["video"].astype(str), table["class_id"].astype(int), strict=True))
    else:
        examples = folder / "examples.json"
        if not examples.is_file():
            raise DatasetError(f"{examples}: missing (expected the official NSynth layout)")
        meta = json.loads(examples.read_text())
        notes = {note: int(info["instrument_family"]) for note, info in meta.items()}
    clips = []
    for note, family in sorted(notes.items()):
        if not 0 <= family < len(names):
            raise DatasetError(f"nsynth: instrument_family {family} outside 0..{len(names) - 1}")
        clips.append(Clip(str(folder / "audio" / f"{note}.wav"), (family,)))
    return ClipIndex("nsynth", split, clips, {HEAD: names})
