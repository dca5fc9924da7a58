"""The paper's training recipes as named presets (values from the authors' configs).

Pre-training on VGG-Sound: SGD (momentum 0.9, Nesterov, weight decay 1e-4), lr 0.01 with x0.1
steps at epochs 30 and 40, 50 epochs, batch 32, precise BN over 200 batches before evaluation.
Fine-tuning: start from VGG-Sound weights with new heads, lr 0.001 with steps at 20 and 25, 30
epochs, every BN except the stem's frozen. Fine-tune presets leave ``init`` unset on purpose: the
user must name the pre-trained weights (``--init``) or ask for training from scratch
(``--set init=none``), so nobody trains from scratch by accident.
"""

from __future__ import annotations

from typing import Any

from arinext.training.config import deep_merge

__all__ = ["PRESETS", "preset_config"]

_PRETRAIN: dict[str, Any] = dict(
    architecture="b1",
    init="none",
    freeze_bn=False,
    epochs=50,
    batch_size=32,
    lr=0.01,
    lr_milestones=[30, 40],
    precise_bn_batches=200,
)

_FINETUNE: dict[str, Any] = dict(
    architecture="b1",
    init="",
    freeze_bn=True,
    epochs=30,
    batch_size=32,
    lr=0.001,
    lr_milestones=[20, 25],
    precise_bn_batches=0,
)

PRESETS: dict[str, dict[str, Any]] = {
    "pretrain-vggsound": deep_merge(
        _PRETRAIN,
        # VGG-Sound has no validation split; the paper reports (and selects on) the test set.
        dict(dataset="vggsound", audio={"name": "vggsound"}, val_split="test"),
    ),
    # EPIC test labels are not public (challenge server): validation is the reported split.
    "finetune-epic-sounds": deep_merge(
        _FINETUNE,
        dict(dataset="epic_sounds", audio={"name": "epic_sounds"}, test_split="validation"),
    ),
    "finetune-epic-kitchens": deep_merge(
        _FINETUNE,
        dict(
            dataset="epic_kitchens_100",
            audio={"name": "epic_kitchens_100"},
            test_split="validation",
            best_metric="action_top1",
        ),
    ),
    "finetune-speech-commands": deep_merge(
        _FINETUNE, dict(dataset="speech_commands", audio={"name": "speech_commands"})
    ),
    # 10-fold cross-validation: ``data.fold`` (``--fold``) is both the validation and test fold.
    "finetune-urbansound8k": deep_merge(
        _FINETUNE,
        dict(
            dataset="urbansound8k",
            audio={"name": "urbansound8k"},
            data={"fold": 1},
            test_split="validation",
        ),
    ),
    "finetune-nsynth": deep_merge(_FINETUNE, dict(dataset="nsynth", audio={"name": "nsynth"})),
}


def preset_config(name: str) -> dict[str, Any]:
    """The preset's values as a plain dict (to merge YAML and CLI overrides into)."""
    try:
        return deep_merge({"preset": name}, PRESETS[name])
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
