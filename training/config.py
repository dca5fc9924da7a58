"""The training configuration: one dataclass, built from a preset, a YAML file and CLI overrides.

Everything a run depends on lives here and is saved as ``run_dir/config.yaml``, so a run can be
resumed, evaluated or exported from its directory alone. Values are plain types (str, int, float,
bool, lists, dicts) so the config can also ride inside checkpoints that are loaded with
``torch.load(weights_only=True)``.

``yaml`` is imported where it is used: ``arinext`` registers the training commands (which import
this module) in the serving image too, where no YAML is needed.

Precedence, lowest first: dataclass defaults < preset < ``--config`` YAML < common flags
(``--epochs`` ...) < ``--set key=value`` (dotted keys reach into ``audio``, ``model``, ``data``
and ``augment``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model.audio_config import AudioConfig, get_preset

__all__ = [
    "AugmentConfig",
    "ConfigError",
    "TrainConfig",
    "UserError",
    "apply_overrides",
    "deep_merge",
    "load_yaml",
    "parse_assignments",
    "save_config",
]

# ``init`` values that mean "random initialisation".
NO_INIT = ("none", "scratch")


class UserError(ValueError):
    """A problem with what the user asked for (config, data, checkpoint): the CLI reports it
    in one line instead of a traceback."""


class ConfigError(UserError):
    """A configuration value that is unknown, of the wrong type or inconsistent."""


@dataclass
class AugmentConfig:
    """SpecAugment on training log-mels (time warp, then frequency masks, then time masks)."""

    enabled: bool = True
    time_warp: int = 5
    freq_masks: int = 2
    freq_width: int = 27
    time_masks: int = 2
    time_width: int = 25


@dataclass
class TrainConfig:
    """A complete, resolved description of one training run.

    ``batch_size`` is the global batch (split across processes under torchrun), as in the
    authors' PySlowFast configs, so a recipe means the same on one GPU and on eight.
    """

    preset: str = "custom"
    dataset: str = "speech_commands"
    data_root: str = ""
    # Reader options, e.g. ``fold`` (UrbanSound8K), ``hdf5`` / ``annotations_dir`` (EPIC).
    data: dict[str, Any] = field(default_factory=dict)
    train_split: str = "train"
    val_split: str = "validation"
    test_split: str = "test"
    # ``name`` picks an audio preset of model.audio_config; other keys override its fields.
    audio: dict[str, Any] = field(default_factory=lambda: {"name": "speech_commands"})
    architecture: str = "b1"
    # Keyword overrides for model.registry.create_model (e.g. width, depths) for small models.
    model: dict[str, Any] = field(default_factory=dict)
    # "" = not chosen (fine-tune presets insist), "none" = from scratch, else a run directory,
    # one of our checkpoints or an authors' .pyth checkpoint.
    init: str = "none"
    # Fine-tuning freezes every BatchNorm except the stem's; only applies when ``init`` is set.
    freeze_bn: bool = False
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.001
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    # PySlowFast's default (BN.WEIGHT_DECAY): BatchNorm scales and shifts are not decayed.
    bn_weight_decay: float = 0.0
    lr_milestones: list[int] = field(default_factory=lambda: [20, 25])
    lr_gamma: float = 0.1
    # Re-estimate BN statistics over this many training batches before each evaluation.
    precise_bn_batches: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Validation metric that selects best.pt (a key of training.metrics' output).
    best_metric: str = "top1"
    # Validate every this many epochs (the last epoch always is); the authors used 2.
    eval_every: int = 1
    eval_batch_size: int = 32
    num_workers: int = 2
    # Decode (and resample) every clip once, in the main process, before training.
    cache_audio: bool = False
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    out: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = _build(AugmentConfig, self.augment, "augment.")
        if min(self.epochs, self.batch_size, self.eval_batch_size, self.eval_every) < 1:
            raise ConfigError("epochs, batch_size, eval_batch_size and eval_every must be >= 1")
        if self.amp not in ("auto", "none", "bf16", "fp16"):
            raise ConfigError(f"amp must be auto, none, bf16 or fp16, got {self.amp!r}")
        if "name" not in self.audio:
            raise ConfigError("audio.name (an audio preset) is required")
        self.audio_config()  # fail early on a bad audio override

    @property
    def from_scratch(self) -> bool:
        """True when the network starts from random weights."""
        return self.init.strip().lower() in NO_INIT

    @property
    def frozen_bn(self) -> bool:
        """BN freezing applies only when there are pre-trained statistics to keep."""
        return self.freeze_bn and not self.from_scratch

    def audio_config(self) -> AudioConfig:
        """The resolved front-end: the named preset with this run's overrides applied."""
        base = get_preset(str(self.audio["name"]))
        try:
            return AudioConfig(**{**base.model_dump(), **self.audio})
        except ValueError as exc:
            raise ConfigError(f"bad audio settings: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """Plain-typed dict (with the audio section fully resolved) for YAML and checkpoints."""
        out = asdict(self)
        out["audio"] = self.audio_config().model_dump(mode="json")
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Validate keys and coerce types; unknown keys are an error, not silently ignored."""
        return _build(cls, values, "")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Coerce a YAML/CLI value to a field's annotated type (the few types the config uses)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], key)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(annotation)
        return [_coerce(v, item, key) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(annotation, value, f"{key}.")
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if value is None:
            return ""
        if isinstance(value, dict | list):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"known: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items()}
    return cls(**kwargs)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` on top of ``base``; nested mappings merge key by key instead of replacing."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """``["a.b=1", "lr=0.1"]`` -> ``{"a": {"b": 1}, "lr": 0.1}``; values are parsed as YAML."""
    import yaml

    nested: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r} conflicts with an earlier assignment")
        node[parts[-1]] = value
    return nested


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A new config with nested ``overrides`` merged in (and validated)."""
    return TrainConfig.from_dict(deep_merge(asdict(cfg), overrides))


def load_yaml(path: Path | str) -> dict[str, Any]:
    """A YAML mapping from a file (safe loader: YAML config never executes code)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def save_config(cfg: TrainConfig, path: Path | str) -> None:
    """Write the resolved config as YAML (what ``--resume``, evaluate and export read back)."""
    import yaml

    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
