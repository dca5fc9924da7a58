"""Class names of the paper's datasets, in the authors' class_id order.

The order is the order of their released checkpoints' outputs, so an imported checkpoint gets the
right names. EPIC-KITCHENS-100 lists are partial (``null`` where unknown); unknown names become
``<dataset>_<index>`` so every output still has a unique, stable name.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

__all__ = [
    "CORE_WORDS",
    "LABEL_SETS",
    "NOT_KEYWORDS",
    "PRESET_LABELS",
    "SILENCE",
    "UNKNOWN",
    "is_keyword",
    "load_labels",
    "resolve_labels",
]

# Keyword spotting's two classes besides the words (Speech Commands, YAMNet, MediaPipe): speech
# that is none of the words, and no speech at all. The demo and the stream say "no keyword".
UNKNOWN = "_unknown_"
SILENCE = "_silence_"
NOT_KEYWORDS = frozenset({UNKNOWN, SILENCE})
# The ten words of the keyword-spotting task defined with the dataset (Warden 2018).
CORE_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


def is_keyword(label: str) -> bool:
    """Whether ``label`` names something said: not ``_unknown_``, ``_silence_`` or any other
    ``_``-prefixed "none of these" class (Speech Commands' ``_background_noise_`` convention)."""
    return label not in NOT_KEYWORDS and not label.startswith("_")


LABEL_SETS: tuple[str, ...] = (
    "vggsound",
    "epic_sounds",
    "epic_kitchens_100_verb",
    "epic_kitchens_100_noun",
    "speech_commands_v2",
    "urbansound8k",
    "nsynth",
)

# Audio preset -> {head name: label set}; the head names are the ones models of that preset use.
PRESET_LABELS: dict[str, dict[str, str]] = {
    "vggsound": {"vggsound": "vggsound"},
    "epic_sounds": {"epic_sounds": "epic_sounds"},
    "epic_kitchens_100": {"verb": "epic_kitchens_100_verb", "noun": "epic_kitchens_100_noun"},
    "speech_commands": {"speech_commands": "speech_commands_v2"},
    "urbansound8k": {"urbansound8k": "urbansound8k"},
    "nsynth": {"nsynth": "nsynth"},
}


def _complete(names: list[str | None], prefix: str) -> list[str]:
    return [name if name else f"{prefix}_{i}" for i, name in enumerate(names)]


def load_labels(name: str) -> list[str]:
    """Labels of a bundled label set (see ``LABEL_SETS``)."""
    if name not in LABEL_SETS:
        raise KeyError(f"unknown label set {name!r}; known: {', '.join(LABEL_SETS)}")
    text = resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    data = json.loads(text)
    return _complete(data["labels"], name)


def resolve_labels(spec: str) -> dict[str, list[str]]:
    """Head name -> labels, from a preset name, a label-set name or a JSON file.

    The JSON file may be a list of names (one head named after the file), a dict of head name to
    list, or the bundled format (``{"labels": [...]}``).
    """
    if spec in PRESET_LABELS:
        return {head: load_labels(s) for head, s in PRESET_LABELS[spec].items()}
    if spec in LABEL_SETS:
        return {spec: load_labels(spec)}
    path = Path(spec)
    if not path.is_file():
        known = ", ".join(sorted(set(PRESET_LABELS) | set(LABEL_SETS)))
        raise ValueError(
            f"labels {spec!r} is neither a known preset/label set ({known}) nor a file"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, list):
        return {path.stem: _complete(data, path.stem)}
    if isinstance(data, dict) and "labels" in data:
        return {path.stem: _complete(data["labels"], path.stem)}
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        return {head: _complete(v, head) for head, v in data.items()}
    raise ValueError(f"{path}: expected a list of labels or a dict of head name -> labels")
