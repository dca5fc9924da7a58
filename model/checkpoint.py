"""Import the authors' AudioRepInceptionNeXt checkpoints (PySlowFast ``.pyth`` files).

A checkpoint is ``torch.save({"epoch", "model_state", "optimizer_state", "cfg": <YAML>})``. The
YAML config says which network (width), which heads, which dataset and which audio settings the
weights belong to; everything the artifact needs is derived from it, so a released checkpoint
becomes a servable artifact with one command. Loading is strict: any key or shape that does not
line up is reported by name and nothing is written, because a silently half-loaded network
still produces confident-looking (wrong) predictions.

Checkpoints are read with ``weights_only=True`` only: a ``.pyth`` from the internet must not be
able to run code on import.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import ValidationError
from torch import Tensor, nn

from model.audio_config import PRESETS, AudioConfig
from model.export import ReparamLevel, default_provenance, export_artifact
from model.inception_next import authors_key_map
from model.labels import LABEL_SETS, PRESET_LABELS, load_labels, resolve_labels
from model.manifest import Manifest, sha256_file
from model.registry import VARIANTS, create_model
from model.reparam import reparameterize_model

__all__ = [
    "AUTHORS_MODEL_NAME",
    "AuthorsCheckpointInfo",
    "CheckpointError",
    "import_checkpoint",
    "load_authors_checkpoint",
]

logger = logging.getLogger(__name__)

AUTHORS_MODEL_NAME = "AudioRepInceptionNeXt"
_WIDTH_TO_ARCHITECTURE = {32: "b0", 64: "b1"}
# Dataset names as the authors' configs spell them (lower-cased, punctuation dropped).
_DATASET_PRESETS = {
    "vggsound": "vggsound",
    "epicsound": "epic_sounds",
    "epicsounds": "epic_sounds",
    "epickitchens": "epic_kitchens_100",
    "epickitchens100": "epic_kitchens_100",
    "speechcommand": "speech_commands",
    "speechcommands": "speech_commands",
    "speechcommandv2": "speech_commands",
    "speechcommandsv2": "speech_commands",
    "urbansound8k": "urbansound8k",
    "nsynth": "nsynth",
}
_TWO_HEADS = ("verb", "noun")  # EPIC-KITCHENS-100: head.projection_verb / _noun
_AUDIO_FIELDS = {
    "sample_rate": "SAMPLING_RATE",
    "window_ms": "WINDOW_LENGTH",
    "hop_ms": "HOP_LENGTH",
    "clip_seconds": "CLIP_SECS",
    "num_frames": "NUM_FRAMES",
    "n_mels": "NUM_FREQUENCIES",
}
_LISTED_KEYS = 8  # keys named per problem in an error message
_MISSING = object()


class CheckpointError(ValueError):
    """The file is not an authors' checkpoint this importer can load exactly."""


@dataclass(frozen=True)
class AuthorsCheckpointInfo:
    """What the checkpoint's config says about the weights."""

    path: Path
    architecture: str
    width: int
    heads: dict[str, int]
    dataset: str
    preset: str | None  # the audio preset of a known dataset, None for an unknown one
    frontend: AudioConfig
    merged: bool
    epoch: int | None
    sha256: str
    dropped_keys: tuple[str, ...] = field(default=())  # branch keys a merged checkpoint carries


def _cfg(cfg: Mapping[str, Any], dotted: str, default: Any = _MISSING) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is _MISSING:
                raise CheckpointError(f"checkpoint cfg has no {dotted}")
            return default
        node = node[part]
    return node


def _read(path: Path) -> tuple[dict[str, Tensor], dict[str, Any], int | None]:
    """``model_state``, parsed ``cfg`` and ``epoch`` of a checkpoint file, validated."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {first_line})"
        ) from exc
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: checkpoint is a {type(raw).__name__}, not a dict")
    if "model_state" not in raw:
        raise CheckpointError(f"{path}: checkpoint has no model_state (keys: {sorted(raw)})")
    state = raw["model_state"]
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path}: model_state is not a non-empty dict of tensors")
    not_tensors = [str(k) for k, v in state.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: model_state entries are not tensors: {_names(not_tensors)}")
    text = raw.get("cfg")
    if not isinstance(text, str):
        raise CheckpointError(f"{path}: checkpoint has no cfg YAML string")
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{path}: cfg is not valid YAML: {exc}") from exc
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: cfg YAML is not a mapping")
    epoch = raw.get("epoch")
    return dict(state), cfg, epoch if isinstance(epoch, int) else None


def _names(keys: Sequence[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_LISTED_KEYS])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _LISTED_KEYS else "")


def _architecture(cfg: Mapping[str, Any]) -> tuple[str, int]:
    model_name = _cfg(cfg, "MODEL.MODEL_NAME")
    if model_name != AUTHORS_MODEL_NAME:
        raise CheckpointError(
            f"unknown architecture: MODEL.MODEL_NAME is {model_name!r}, expected "
            f"{AUTHORS_MODEL_NAME!r}"
        )
    width = _cfg(cfg, "RESNET.WIDTH_PER_GROUP")
    if width not in _WIDTH_TO_ARCHITECTURE:
        known = ", ".join(f"{w} -> {a}" for w, a in _WIDTH_TO_ARCHITECTURE.items())
        raise CheckpointError(f"unknown architecture: RESNET.WIDTH_PER_GROUP {width!r} ({known})")
    return _WIDTH_TO_ARCHITECTURE[width], width


def _flat(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return [item for sub in value for item in _flat(sub)]
    return [value]


def _check_kernels(cfg: Mapping[str, Any], architecture: str) -> None:
    """The stem and mixer kernel sizes must be the ones the registry's variant builds."""
    variant = VARIANTS[architecture]
    expected = {
        "RESNET.TEMP_KERNEL_SIZES": (variant["stem_kernel"][0], max(variant["kernel_sizes"])),
        "RESNET.FREQ_KERNEL_SIZES": (variant["stem_kernel"][1], max(variant["kernel_sizes"])),
    }
    for key, (stem, mixer) in expected.items():
        stages = _cfg(cfg, key, None)
        if stages is None:
            continue  # older configs: the key/shape check below still catches a mismatch
        if not isinstance(stages, list) or len(stages) < 2:
            raise CheckpointError(f"checkpoint cfg {key} is malformed: {stages!r}")
        if _flat(stages[0]) != [stem] or any(k != mixer for k in _flat(stages[1:])):
            raise CheckpointError(
                f"unsupported kernel sizes: {key} is {stages!r}; this importer builds a "
                f"{stem}-tap stem and {mixer}-tap mixers"
            )


def _heads(cfg: Mapping[str, Any], single_head: str) -> dict[str, int]:
    classes = _cfg(cfg, "MODEL.NUM_CLASSES")
    counts = classes if isinstance(classes, list) else [classes]
    if not counts or not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        raise CheckpointError(f"MODEL.NUM_CLASSES must be class counts, got {classes!r}")
    if any(c < 1 for c in counts):
        raise CheckpointError(f"MODEL.NUM_CLASSES must be positive, got {classes!r}")
    if len(counts) == 1:
        return {single_head: counts[0]}
    if len(counts) == len(_TWO_HEADS):
        return dict(zip(_TWO_HEADS, counts, strict=True))
    raise CheckpointError(f"MODEL.NUM_CLASSES {classes!r}: only one or two heads are supported")


def _dataset(cfg: Mapping[str, Any]) -> tuple[str, str | None]:
    """The dataset name as written in the cfg and its preset (None when unknown)."""
    name = _cfg(cfg, "TRAIN.DATASET", None) or _cfg(cfg, "TEST.DATASET", None)
    if not isinstance(name, str) or not name:
        raise CheckpointError("unknown dataset: cfg has neither TRAIN.DATASET nor TEST.DATASET")
    return name, _DATASET_PRESETS.get(re.sub(r"[^a-z0-9]", "", name.lower()))


def _slug(name: str) -> str:
    """A Python identifier (head names must be one) from a dataset or file name."""
    slug = re.sub(r"\W+", "_", name.strip().lower()).strip("_")
    return slug if slug.isidentifier() else f"_{slug}"


def _frontend(cfg: Mapping[str, Any], dataset: str, preset: str | None) -> AudioConfig:
    """The preset the cfg's audio settings belong to, or a config named after the dataset."""
    values = {ours: _cfg(cfg, f"AUDIO_DATA.{theirs}") for ours, theirs in _AUDIO_FIELDS.items()}
    views = _cfg(cfg, "TEST.NUM_ENSEMBLE_VIEWS", None)
    if preset is not None:
        known = PRESETS[preset]
        same = all(
            isinstance(v, int | float) and math.isclose(v, getattr(known, k), rel_tol=1e-9)
            for k, v in values.items()
        )
        if same:
            settings = known.model_dump()
            if views is not None:
                settings["test_views"] = views
            return _audio_config(settings)
        logger.warning(
            "audio settings of dataset %r differ from preset %r; using the checkpoint's",
            dataset,
            preset,
        )
        name = f"{preset}_custom"
    else:
        name = _slug(dataset)
    settings = {"name": name, **values}
    if views is not None:
        settings["test_views"] = views
    return _audio_config(settings)


def _audio_config(settings: Mapping[str, Any]) -> AudioConfig:
    try:
        return AudioConfig(**settings)
    except ValidationError as exc:
        raise CheckpointError(f"checkpoint cfg AUDIO_DATA is invalid: {exc}") from exc


def _match_keys(
    state: Mapping[str, Tensor],
    key_map: Mapping[str, str],
    ours: Mapping[str, Tensor],
    droppable: Mapping[str, tuple[int, ...]],
) -> list[str]:
    """Problems between the checkpoint's keys/shapes and the model's, each one named."""
    problems = []
    missing = [k for k in key_map if k not in state]
    dropped = [k for k in droppable if k in state]
    if dropped and len(dropped) != len(droppable):
        missing += [k for k in droppable if k not in state]
    unexpected = [k for k in state if k not in key_map and k not in droppable]
    if missing:
        problems.append(f"missing {len(missing)} key(s): {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {_names(unexpected)}")
    shapes = {k: tuple(ours[v].shape) for k, v in key_map.items()} | dict(droppable)
    mismatched = [
        f"{k} expected {shapes[k]}, got {tuple(state[k].shape)}"
        for k in sorted(state)
        if k in shapes and tuple(state[k].shape) != shapes[k]
    ]
    if mismatched:
        shown = "; ".join(mismatched[:_LISTED_KEYS])
        more = f"; ... ({len(mismatched)} in all)" if len(mismatched) > _LISTED_KEYS else ""
        problems.append(f"shape mismatch: {shown}{more}")
    return problems


def load_authors_checkpoint(
    path: Path | str, head_name: str | None = None
) -> tuple[nn.Module, AuthorsCheckpointInfo]:
    """Build the network a checkpoint describes and load its weights exactly (eval mode).

    Train-form checkpoints give the train-form model; merged ones (``MODEL.MERGE_MODE`` or
    ``*_reparam.*`` keys) give the paper-merged form, and the train-form branch keys they may
    still carry are checked and dropped. ``head_name`` names a single head (default: the
    dataset's preset head, e.g. ``"vggsound"``); two heads are always ``verb``/``noun``.
    """
    path = Path(path)
    state, cfg, epoch = _read(path)
    try:
        architecture, width = _architecture(cfg)
        _check_kernels(cfg, architecture)
        dataset, preset = _dataset(cfg)
        default_head = next(iter(PRESET_LABELS[preset])) if preset else _slug(dataset)
        heads = _heads(cfg, _slug(head_name) if head_name else default_head)
        frontend = _frontend(cfg, dataset, preset)
        merged = bool(_cfg(cfg, "MODEL.MERGE_MODE", False)) or any("_reparam." in k for k in state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None

    train_form = create_model(architecture, heads)
    train_map = authors_key_map(train_form)
    if merged:
        model = reparameterize_model(train_form, inplace=False, fold_identity=False)
        key_map = authors_key_map(model)
        train_state = train_form.state_dict()
        droppable = {
            k: tuple(train_state[v].shape) for k, v in train_map.items() if k not in key_map
        }
    else:
        model, key_map, droppable = train_form, train_map, {}
    problems = _match_keys(state, key_map, model.state_dict(), droppable)
    if problems:
        form = "merged" if merged else "train-form"
        raise CheckpointError(
            f"{path}: weights do not fit {architecture} ({form}, heads {heads}): "
            + "; ".join(problems)
        )
    model.load_state_dict({ours: state[theirs] for theirs, ours in key_map.items()}, strict=True)
    model.eval()
    dropped = tuple(sorted(k for k in droppable if k in state))
    if dropped:
        logger.info(
            "%s: dropped %d train-form branch keys of a merged checkpoint", path, len(dropped)
        )
    info = AuthorsCheckpointInfo(
        path=path,
        architecture=architecture,
        width=width,
        heads=heads,
        dataset=dataset,
        preset=preset,
        frontend=frontend,
        merged=merged,
        epoch=epoch,
        sha256=sha256_file(path),
        dropped_keys=dropped,
    )
    logger.info(
        "loaded %s: %s (width %d), %s, dataset %s, heads %s, epoch %s",
        path,
        architecture,
        width,
        "merged" if merged else "train form",
        dataset,
        heads,
        epoch,
    )
    return model, info


def _requested_labels(spec: str) -> dict[str, list[str]]:
    """``--labels`` resolved, with label-set names mapped to their preset's head name."""
    try:
        resolved = resolve_labels(spec)
    except (KeyError, ValueError, OSError) as exc:
        raise CheckpointError(f"labels {spec!r}: {exc}") from exc
    renamed = {}
    for head, names in resolved.items():
        if head in LABEL_SETS:
            head = next(
                (h for sets in PRESET_LABELS.values() for h, s in sets.items() if s == head), head
            )
        renamed[_slug(head)] = names
    return renamed


def import_checkpoint(
    ckpt: Path | str,
    out_dir: Path | str,
    labels: str | None = None,
    name: str | None = None,
    level: ReparamLevel = "full",
    overwrite: bool = False,
) -> Manifest:
    """Turn an authors' checkpoint into a verified artifact directory.

    ``labels`` is a preset, a label-set name or a JSON file (see ``model.labels``); by default
    the dataset's bundled labels. ``level`` is ``"paper"`` or ``"full"``. Raises
    ``CheckpointError`` (bad checkpoint or labels) or ``ExportError`` (export not faithful);
    in both cases nothing is written.
    """
    if level not in ("paper", "full"):
        raise CheckpointError(f"level must be 'paper' or 'full', got {level!r}")
    requested = _requested_labels(labels) if labels is not None else None
    single = next(iter(requested)) if requested and len(requested) == 1 else None
    model, info = load_authors_checkpoint(ckpt, head_name=single)
    if requested is None:
        if info.preset is None:
            raise CheckpointError(
                f"{info.path}: unknown dataset {info.dataset!r} has no bundled labels; "
                "pass labels (a preset, label set or JSON file)"
            )
        requested = {h: load_labels(s) for h, s in PRESET_LABELS[info.preset].items()}
    if set(requested) != set(info.heads):
        raise CheckpointError(
            f"labels are for head(s) {sorted(requested)} but the checkpoint has "
            f"{', '.join(f'{h} ({n} classes)' for h, n in info.heads.items())}"
        )
    for head, classes in info.heads.items():
        if len(requested[head]) != classes:
            raise CheckpointError(
                f"labels for head {head!r} have {len(requested[head])} names but the checkpoint "
                f"has {classes} classes"
            )
    return export_artifact(
        model,
        out_dir,
        name=name or f"{info.architecture}-{info.preset or _slug(info.dataset)}",
        architecture=info.architecture,
        frontend=info.frontend,
        labels=requested,
        level=level,
        provenance=default_provenance(source=str(info.path.resolve())),
        extra={
            "authors_checkpoint": {
                "file": info.path.name,
                "sha256": info.sha256,
                "epoch": info.epoch,
                "dataset": info.dataset,
                "width_per_group": info.width,
                "merged": info.merged,
            }
        },
        overwrite=overwrite,
    )
