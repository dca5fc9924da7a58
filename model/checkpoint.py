"""Import the authors' AudioRepInceptionNeXt checkpoints (PySlowFast ``.pyth`` files).

A checkpoint is ``torch.save({"epoch", "model_state", "optimizer_state", "cfg": <YAML>})``. The
YAML config says which network, which heads, which dataset and which audio settings the weights
belong to; everything the artifact needs is derived from it, so a released checkpoint becomes a
servable artifact with one command. The network is built from the cfg the way the authors'
builder reads it (width, depth, kernel sizes per stage and block, strides, groups, heads, frames,
mel bands) and its constructor arguments are recorded in the manifest; only what their code
itself could not build (or what this importer cannot reproduce exactly) is refused, by name.
Loading is strict: any key or shape that does not line up is reported by name and nothing is
written, because a silently half-loaded network still produces confident-looking (wrong)
predictions.

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

from arinext.model.audio_config import PRESETS, AudioConfig
from arinext.model.export import default_provenance, export_artifact
from arinext.model.inception_next import AudioRepInceptionNeXt, authors_key_map
from arinext.model.labels import LABEL_SETS, PRESET_LABELS, load_labels, resolve_labels
from arinext.model.manifest import Manifest, ReparamLevel, sha256_file
from arinext.model.registry import VARIANTS
from arinext.model.reparam import reparameterize_model

__all__ = [
    "AUTHORS_MODEL_NAME",
    "AuthorsCheckpointInfo",
    "CheckpointError",
    "import_checkpoint",
    "load_authors_checkpoint",
]

logger = logging.getLogger(__name__)

AUTHORS_MODEL_NAME = "AudioRepInceptionNeXt"
# What the authors' builder accepts and hard-codes (their PySlowFast fork, commit 17272a5).
_STAGE_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_TRANSFORMS = (
    "ms_threeway_dw_bottleneck_transform",
    "ms_threeway_dw_bottleneck_inference_transform",
)
_FIXED_BRANCHES = (11, 3)  # medium and small kernels of every mixer; the cfg sets the large one
_STAGES = 4
_PAPER_NETWORK = {  # cfg values when a key is absent (older configs): the paper's network
    "TEMP_KERNEL_SIZES": [[[5]], [[21]], [[21]], [[21]], [[21]]],
    "FREQ_KERNEL_SIZES": [[[7]], [[21]], [[21]], [[21]], [[21]]],
    "TIME_STRIDES": [[1], [2], [2], [2]],
    "FREQUENCY_STRIDES": [[1], [2], [2], [2]],
    "FREQUENCY_DILATIONS": [[1], [1], [1], [1]],
}
_ACTIVATIONS = ("softmax", "sigmoid")  # MODEL.HEAD_ACT: what their head applies in eval mode
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
    architecture: str  # a registry variant (b0, b1) or "audiorepinceptionnext"
    width: int
    heads: dict[str, int]
    dataset: str
    preset: str | None  # the audio preset of a known dataset, None for an unknown one
    frontend: AudioConfig
    merged: bool
    epoch: int | None
    sha256: str
    dropped_keys: tuple[str, ...] = field(default=())  # branch keys a merged checkpoint carries
    # ``create_model(variant, heads, **overrides)`` rebuilds the network (training uses this).
    variant: str = "b1"
    overrides: dict[str, Any] = field(default_factory=dict)
    architecture_params: dict[str, Any] = field(default_factory=dict)
    activation: str = "softmax"


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


def _int(value: Any, key: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CheckpointError(
            f"checkpoint cfg {key} must be an integer >= {minimum}, got {value!r}"
        )
    return value


def _per_stage(cfg: Mapping[str, Any], key: str, stages: int) -> list[list[int]]:
    """``RESNET.<key>``: one ``[pathway 0 values, ...]`` list per stage -> pathway 0's values."""
    value = _cfg(cfg, f"RESNET.{key}", _PAPER_NETWORK.get(key))
    if not isinstance(value, list) or len(value) != stages:
        raise CheckpointError(f"checkpoint cfg RESNET.{key} needs {stages} entries: {value!r}")
    rows = []
    for entry in value:
        first = entry[0] if isinstance(entry, list) and entry else entry
        row = first if isinstance(first, list) else [first]
        rows.append([_int(v, f"RESNET.{key}") for v in row])
    return rows


def _block_sizes(
    cfg: Mapping[str, Any], axis: str, depths: Sequence[int]
) -> tuple[int, list[list[int]]]:
    """Stem kernel and each block's large kernel along ``axis`` ("TEMP" or "FREQ").

    As the authors' stage does: the stage's kernel list repeated over its blocks, the first
    ``NUM_BLOCK_<axis>_KERNEL`` blocks use it, the rest a 1-tap kernel.
    """
    key = f"{axis}_KERNEL_SIZES"
    kernels = _per_stage(cfg, key, _STAGES + 1)
    stem = kernels[0][0]
    counts = _cfg(cfg, f"RESNET.NUM_BLOCK_{axis}_KERNEL", [[d] for d in depths])
    if not isinstance(counts, list) or len(counts) != _STAGES:
        raise CheckpointError(f"checkpoint cfg RESNET.NUM_BLOCK_{axis}_KERNEL is malformed")
    per_block = []
    for stage, (depth, sizes) in enumerate(zip(depths, kernels[1:], strict=True)):
        entry = counts[stage]
        n = _int(entry[0] if isinstance(entry, list) else entry, "NUM_BLOCK_KERNEL", minimum=0)
        if n > depth:
            raise CheckpointError(
                f"RESNET.NUM_BLOCK_{axis}_KERNEL[{stage}] is {n} but the stage has {depth} "
                "blocks (the authors' stage asserts it is not more)"
            )
        blocks = ((sizes * depth)[:n] + [1] * (depth - n))[:depth]
        for k in blocks:
            if k % 2 == 0:
                raise CheckpointError(
                    f"RESNET.{key} has an even kernel ({k}): 'same' padding k//2 changes the "
                    "length, so the authors' branches cannot be added"
                )
            if k in _FIXED_BRANCHES:
                raise CheckpointError(
                    f"RESNET.{key} has a {k}-tap kernel, the size of a fixed branch "
                    f"({', '.join(map(str, _FIXED_BRANCHES))}): two branches of one size are not "
                    "supported by this importer"
                )
        per_block.append(blocks)
    return stem, per_block


def _network(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``AudioRepInceptionNeXt`` constructor arguments (plain JSON types) from the cfg."""
    model_name = _cfg(cfg, "MODEL.MODEL_NAME")
    if model_name != AUTHORS_MODEL_NAME:
        raise CheckpointError(
            f"unknown architecture: MODEL.MODEL_NAME is {model_name!r}, expected "
            f"{AUTHORS_MODEL_NAME!r}"
        )
    width = _int(_cfg(cfg, "RESNET.WIDTH_PER_GROUP"), "RESNET.WIDTH_PER_GROUP")
    depth = _cfg(cfg, "RESNET.DEPTH", 50)
    if depth not in _STAGE_DEPTHS:
        raise CheckpointError(
            f"unknown architecture: RESNET.DEPTH {depth!r}; the authors' builder knows "
            f"{', '.join(map(str, _STAGE_DEPTHS))}"
        )
    depths = _STAGE_DEPTHS[depth]
    transform = _cfg(cfg, "RESNET.TRANS_FUNC", _TRANSFORMS[0])
    if transform not in _TRANSFORMS:
        raise CheckpointError(f"unknown architecture: RESNET.TRANS_FUNC {transform!r}")
    if _cfg(cfg, "RESNET.STRIDE_1X1", False):
        raise CheckpointError(
            "RESNET.STRIDE_1X1 is true: the authors' transform then passes a (time, freq) stride "
            "pair as one element of the depthwise stride, which PyTorch cannot build"
        )
    groups = _int(_cfg(cfg, "RESNET.NUM_GROUPS", 1), "RESNET.NUM_GROUPS")
    channels = _cfg(cfg, "DATA.INPUT_CHANNEL_NUM", [1])
    if channels not in ([1], 1):
        raise CheckpointError(
            f"DATA.INPUT_CHANNEL_NUM {channels!r}: the log-mel front-end gives one channel"
        )
    dilations = _per_stage(cfg, "FREQUENCY_DILATIONS", _STAGES)
    if any(d != 1 for row in dilations for d in row):
        raise CheckpointError(
            f"RESNET.FREQUENCY_DILATIONS {dilations}: with dilation the authors' 'same' padding "
            "no longer keeps the length, so their branches cannot be added"
        )
    time_strides = [row[0] for row in _per_stage(cfg, "TIME_STRIDES", _STAGES)]
    freq_strides = [row[0] for row in _per_stage(cfg, "FREQUENCY_STRIDES", _STAGES)]
    if (time_strides[0], freq_strides[0]) != (1, 1):
        raise CheckpointError(
            "the first stage must not stride (RESNET.TIME_STRIDES/FREQUENCY_STRIDES [0]): its "
            "first 1x1 conv keeps the width and so never strides in the authors' transform"
        )
    stem_t, time_blocks = _block_sizes(cfg, "TEMP", depths)
    stem_f, freq_blocks = _block_sizes(cfg, "FREQ", depths)
    block_kernels = [
        [[[t, *_FIXED_BRANCHES], [f, *_FIXED_BRANCHES]] for t, f in zip(ts, fs, strict=True)]
        for ts, fs in zip(time_blocks, freq_blocks, strict=True)
    ]
    first = block_kernels[0][0][0]
    uniform = all(k == [first, first] for stage in block_kernels for k in stage)
    dropout = _cfg(cfg, "MODEL.DROPOUT_RATE", 0.5)
    if not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise CheckpointError(f"MODEL.DROPOUT_RATE must be in [0, 1), got {dropout!r}")
    return {
        "width": width,
        "depths": list(depths),
        "kernel_sizes": first if uniform else [21, *_FIXED_BRANCHES],
        "stem_kernel": [stem_t, stem_f],
        "expansion": 4 * groups,  # the authors' inner width is 4 x NUM_GROUPS x stage width
        "mixer": "band",
        "dropout": float(dropout),
        "in_chans": 1,
        "strides": [[t, f] for t, f in zip(time_strides, freq_strides, strict=True)],
        "block_kernels": None if uniform else block_kernels,
    }


def _feature_map(size: int, stem_kernel: int, strides: Sequence[int]) -> int:
    """Length of one axis after the stem (conv /2, max-pool /2) and the stage strides."""
    size = (size + 2 * (stem_kernel // 2) - stem_kernel) // 2 + 1
    size = (size + 2 - 3) // 2 + 1
    for stride in strides:
        size = (size - 1) // stride + 1
    return size


def _check_head_pool(kwargs: Mapping[str, Any], frames: int, bands: int) -> None:
    """The authors' head average-pools a fixed window sized from NUM_FRAMES and NUM_FREQUENCIES.

    It is a global average (which this project's network computes for any size) only when that
    window covers the whole final feature map; otherwise their head slides the window and
    averages per-window softmaxes, which this importer does not reproduce.
    """
    time_strides = [s[0] for s in kwargs["strides"]]
    window = (frames // 4 // math.prod(time_strides), bands // 32)
    feature_map = (
        _feature_map(frames, kwargs["stem_kernel"][0], time_strides),
        _feature_map(bands, kwargs["stem_kernel"][1], [s[1] for s in kwargs["strides"]]),
    )
    if window != feature_map:
        raise CheckpointError(
            f"AUDIO_DATA.NUM_FRAMES {frames} x NUM_FREQUENCIES {bands}: the authors' head pools a "
            f"fixed {window[0]}x{window[1]} window of a {feature_map[0]}x{feature_map[1]} feature "
            "map, which is not a global average; only sizes where it is (e.g. multiples of 32 "
            "with the default strides) are supported"
        )


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _variant(kwargs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The registry variant closest to ``kwargs`` and the overrides that rebuild them exactly."""
    base = "b0" if kwargs["width"] == VARIANTS["b0"]["width"] else "b1"
    defaults = AudioRepInceptionNeXt(heads={"x": 1}, **VARIANTS[base]).architecture_params
    overrides = {k: v for k, v in kwargs.items() if _plain(defaults.get(k)) != _plain(v)}
    return base, overrides


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
    raise CheckpointError(
        f"MODEL.NUM_CLASSES {classes!r}: the authors' head builds one projection, or a verb and a "
        "noun projection"
    )


def _activation(cfg: Mapping[str, Any]) -> str:
    activation = _cfg(cfg, "MODEL.HEAD_ACT", "softmax")
    if activation not in _ACTIVATIONS:
        raise CheckpointError(
            f"MODEL.HEAD_ACT {activation!r}: the authors' head knows {', '.join(_ACTIVATIONS)}"
        )
    return str(activation)


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
        kwargs = _network(cfg)
        dataset, preset = _dataset(cfg)
        default_head = next(iter(PRESET_LABELS[preset])) if preset else _slug(dataset)
        heads = _heads(cfg, _slug(head_name) if head_name else default_head)
        activation = _activation(cfg)
        frontend = _frontend(cfg, dataset, preset)
        _check_head_pool(kwargs, frontend.num_frames, frontend.n_mels)
        merged = bool(_cfg(cfg, "MODEL.MERGE_MODE", False)) or any("_reparam." in k for k in state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None

    variant, overrides = _variant(kwargs)
    architecture = variant if not overrides else "audiorepinceptionnext"
    train_form = AudioRepInceptionNeXt(heads=heads, **kwargs)
    train_map = authors_key_map(train_form)
    if merged:
        model = reparameterize_model(train_form, ReparamLevel.PAPER)
        assert isinstance(model, AudioRepInceptionNeXt)  # a deep copy of train_form
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
            f"{path}: weights do not fit the cfg's network ({architecture}, width "
            f"{kwargs['width']}, {form}, heads {heads}): " + "; ".join(problems)
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
        width=kwargs["width"],
        heads=heads,
        dataset=dataset,
        preset=preset,
        frontend=frontend,
        merged=merged,
        epoch=epoch,
        sha256=sha256_file(path),
        dropped_keys=dropped,
        variant=variant,
        overrides=overrides,
        architecture_params=kwargs,
        activation=activation,
    )
    logger.info(
        "loaded %s: %s (width %d), %s, dataset %s, heads %s, epoch %s",
        path,
        architecture,
        kwargs["width"],
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
    level: ReparamLevel | str = ReparamLevel.FULL,
    overwrite: bool = False,
) -> Manifest:
    """Turn an authors' checkpoint into a verified artifact directory.

    ``labels`` is a preset, a label-set name or a JSON file (see ``arinext.model.labels``); by
    default the dataset's bundled labels. ``level`` is ``"paper"`` or ``"full"``. Raises
    ``CheckpointError`` (bad checkpoint or labels) or ``ExportError`` (export not faithful); in both
    cases nothing is written.
    """
    if level not in (ReparamLevel.PAPER, ReparamLevel.FULL):
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
        activation="sigmoid" if info.activation == "sigmoid" else "softmax",
        provenance=default_provenance(source=info.path.name),  # not this machine's path
        extra={
            "authors_checkpoint": {
                "file": info.path.name,
                "sha256": info.sha256,
                "epoch": info.epoch,
                "dataset": info.dataset,
                "width_per_group": info.width,
                "merged": info.merged,
                "variant": info.variant,
                "overrides": info.overrides,
            }
        },
        overwrite=overwrite,
    )
