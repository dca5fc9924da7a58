"""Dataset readers, one module per dataset, looked up by name.

Each reader is ``read(root, split, options) -> ClipIndex`` over the dataset's official layout
(see each module's docstring); :class:`ClipDataset` turns any index into log-mel views.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from arinext.training.datasets.base import ClipDataset, ClipIndex, DatasetError

__all__ = ["READERS", "ClipDataset", "ClipIndex", "DatasetError", "read_split"]

# Dataset name -> reader module (imported on use: readers pull in h5py/pandas as needed).
READERS: dict[str, str] = {
    "vggsound": "arinext.training.datasets.vggsound",
    "epic_sounds": "arinext.training.datasets.epic_sounds",
    "epic_kitchens_100": "arinext.training.datasets.epic_kitchens",
    "speech_commands": "arinext.training.datasets.speech_commands",
    "urbansound8k": "arinext.training.datasets.urbansound8k",
    "nsynth": "arinext.training.datasets.nsynth",
}


def read_split(name: str, root: Path | str, split: str, options: dict[str, Any]) -> ClipIndex:
    """The clips of ``split`` of dataset ``name`` stored under ``root``."""
    if name not in READERS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(READERS)}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data root {root} is not a directory")
    reader: Callable[[Path, str, dict[str, Any]], ClipIndex] = importlib.import_module(
        READERS[name]
    ).read
    return reader(root, split, dict(options))
