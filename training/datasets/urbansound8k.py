"""UrbanSound8K (Salamon et al., ACM MM 2014): 8732 clips of up to 4 s, 10 classes, 10 folds.

Official layout::

    ROOT/metadata/UrbanSound8K.csv   slice_file_name, fsID, start, end, salience, fold,
                                     classID, class
    ROOT/audio/fold1 .. fold10/      the slices (various rates and channel counts:
                                     resampled to the preset rate and down-mixed)

10-fold cross-validation as prescribed by the dataset: option ``fold`` (``--fold k``, 1-10) is
the held-out fold (splits ``validation`` and ``test`` are both that fold), ``train`` the other
nine. Report the mean over the ten runs. Option ``annotations_dir``: the authors' pickles
(``UrbanSound8K_train_except_fold<k>.pkl`` / ``UrbanSound8K_valid_fold<k>.pkl``, directly in it or
in their ``UrbanSound8K_{train,valid}_10fold/`` sub-folders; columns ``video`` = file name,
``fold``, ``class_id``). Class order: ``classID``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from arinext.model.labels import load_labels
from arinext.training.datasets.base import Clip, ClipIndex, DatasetError, read_annotation_table

__all__ = ["HEAD", "read"]

HEAD = "urbansound8k"
FOLDS = range(1, 11)


def _pickle_path(directory: Path, split: str, fold: int) -> Path:
    kind, name = (
        ("train", f"UrbanSound8K_train_except_fold{fold}.pkl")
        if split == "train"
        else ("valid", f"UrbanSound8K_valid_fold{fold}.pkl")
    )
    for candidate in (directory / name, directory / f"UrbanSound8K_{kind}_10fold" / name):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"{directory}: no {name}")


def read(root: Path, split: str, options: dict[str, Any]) -> ClipIndex:
    """Clips of ``split``: train (nine folds) or validation/test (the held-out ``fold``)."""
    if split not in ("train", "validation", "test"):
        raise DatasetError(f"urbansound8k has train, validation and test splits, not {split!r}")
    fold = int(options.get("fold", 1))
    if fold not in FOLDS:
        raise DatasetError(f"urbansound8k: fold must be 1..10, got {fold}")
    names = load_labels("urbansound8k")
    if options.get("annotations_dir"):
        table = read_annotation_table(_pickle_path(Path(options["annotations_dir"]), split, fold))
        files = table["video"].astype(str)
    else:
        meta = root / "metadata" / "UrbanSound8K.csv"
        if not meta.is_file():
            raise DatasetError(f"{meta}: missing (expected the official UrbanSound8K layout)")
        table = pd.read_csv(meta)
        held_out = table["fold"].astype(int) == fold
        table = table[~held_out if split == "train" else held_out]
        table = table.rename(columns={"classID": "class_id"})
        files = table["slice_file_name"].astype(str)
    clips = [
        Clip(str(root / "audio" / f"fold{int(f)}" / name), (int(c),))
        for name, f, c in zip(files, table["fold"], table["class_id"], strict=True)
    ]
    return ClipIndex("urbansound8k", f"{split}-fold{fold}", clips, {HEAD: names})
