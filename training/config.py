"""The training configuration: pydantic models built from a preset, a YAML file and CLI overrides.

Everything a run depends on lives here and is saved as ``run_dir/config.yaml``, so a run can be
resumed, evaluated or exported from its directory alone. ``to_dict()`` gives plain types (str, int,
float, bool, lists, dicts) so the config can also ride inside checkpoints that are loaded with
``torch.load(weights_only=True)``. Unknown keys are refused (``extra="forbid"``), like
``AudioConfig`` and ``Manifest``: a typo in a recipe must not silently train something else.

``yaml`` is imported where it is used: ``arinext`` registers the training commands (which import
this module) in the serving image too, where no YAML is needed.

Precedence, lowest first: model defaults < preset (a recipe of ``configs/``, read by
``arinext.training.recipes``) < ``--config`` YAML < common flags
(``--epochs`` ...) < ``--set key=value`` (dotted keys reach into ``audio``, ``model``, ``data``
and ``augment``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    model_validator,
)

from arinext.model.audio_config import AudioConfig, get_preset

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


def _none_is_empty(value: Any) -> Any:
    # An empty YAML value (``init:``) reads as None; for a string setting it means "unset".
    return "" if value is None else value


Text = Annotated[str, BeforeValidator(_none_is_empty)]

_STRICT = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


class AugmentConfig(BaseModel):
    """SpecAugment on training log-mels (time warp, then frequency masks, then time masks)."""

    model_config = _STRICT

    enabled: bool = True
    time_warp: NonNegativeInt = 5
    freq_masks: NonNegativeInt = 2
    freq_width: NonNegativeInt = 27
    time_masks: NonNegativeInt = 2
    time_width: NonNegativeInt = 25
    # The waveform chain of arinext.training.waveform_augment (voice, channel, room, noise, level,
    # position) before the front-end, for models trained on synthetic speech. Off for the
    # paper's recipes, which use SpecAugment alone.
    waveform: bool = False
    rooms: PositiveInt = 128


class TrainConfig(BaseModel):
    """A complete, resolved description of one training run.

    ``batch_size`` is the global batch (split across processes under torchrun), as in the
    authors' PySlowFast configs, so a recipe means the same on one GPU and on eight.
    """

    model_config = _STRICT

    @model_validator(mode="before")
    @classmethod
    def _retired_keys(cls, values: Any) -> Any:
        """Runs saved before batch mixup was removed carry it switched off: read them as they
        trained. A run that mixed is refused, as any unknown key is."""
        if isinstance(values, dict) and values.get("mixup_alpha") in (0, 0.0):
            values = {k: v for k, v in values.items() if k not in ("mixup_alpha", "mixup_prob")}
        return values

    preset: Text = "custom"
    dataset: Text = "speech_commands"
    data_root: Text = ""
    # Reader options, e.g. ``fold`` (UrbanSound8K), ``hdf5`` / ``annotations_dir`` (EPIC).
    data: dict[str, Any] = Field(default_factory=dict)
    train_split: Text = "train"
    val_split: Text = "validation"
    test_split: Text = "test"
    # ``name`` picks an audio preset of arinext.model.audio_config; other keys override its fields.
    audio: dict[str, Any] = Field(default_factory=lambda: {"name": "speech_commands"})
    architecture: Text = "b1"
    # Keyword overrides for arinext.model.registry.create_model (e.g. width, depths) for small
    # models.
    model: dict[str, Any] = Field(default_factory=dict)
    # "" = not chosen (fine-tune presets insist), "none" = from scratch, else a run directory,
    # one of our checkpoints or an authors' .pyth checkpoint.
    init: Text = "none"
    # Fine-tuning freezes every BatchNorm except the stem's; only applies when ``init`` is set.
    freeze_bn: bool = False
    epochs: PositiveInt = 30
    batch_size: PositiveInt = 32
    lr: float = Field(default=0.001, gt=0)
    momentum: float = Field(default=0.9, ge=0)
    nesterov: bool = True
    weight_decay: float = Field(default=1e-4, ge=0)
    # PySlowFast's default (BN.WEIGHT_DECAY): BatchNorm scales and shifts are not decayed.
    bn_weight_decay: float = Field(default=0.0, ge=0)
    # ``sgd`` (PySlowFast's, the paper's fine-tuning) or ``adamw`` (decoupled weight decay, as
    # ConvNeXt and InceptionNeXt train from scratch); ``momentum``/``nesterov`` are SGD's.
    optimizer: Literal["sgd", "adamw"] = "sgd"
    # ``step``: decay by ``lr_gamma`` at each epoch of ``lr_milestones`` (the paper's);
    # ``cosine``: per optimiser step, linear warm-up over ``warmup_epochs`` then a half cosine
    # to zero at the last step.
    schedule: Literal["step", "cosine"] = "step"
    lr_milestones: list[NonNegativeInt] = Field(default_factory=lambda: [20, 25])
    lr_gamma: float = Field(default=0.1, gt=0)
    warmup_epochs: float = Field(default=0.0, ge=0)
    # Cross-entropy target smoothing (0 = one-hot targets).
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    # Re-estimate BN statistics over this many training batches before each evaluation.
    precise_bn_batches: NonNegativeInt = 0
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    # Validation metric that selects best.pt (a key of arinext.training.metrics' output).
    best_metric: Text = "top1"
    # Validate every this many epochs (the last epoch always is); the authors used 2.
    eval_every: PositiveInt = 1
    eval_batch_size: PositiveInt = 32
    num_workers: NonNegativeInt = 2
    # Decode (and resample) every clip once, in the main process, before training.
    cache_audio: bool = False
    seed: int = 0
    device: Text = "auto"
    # NHWC activations: oneDNN runs this network's depthwise and 1 x 1 convolutions faster in
    # channels-last, and the 1 x k mixers need no transposition (benchmarks/train_speed.py;
    # docs/performance.md). Checkpoints and exports are unaffected.
    channels_last: bool = False
    # torch.compile the training step (forward and backward): fewer, fused kernels a step, after
    # minutes of compiling per batch shape (benchmarks/train_speed.py --compile;
    # docs/performance.md). Validation and checkpoints use the module as is.
    compile: bool = False
    # torch.compile's backend: "inductor" generates the fast kernels; "aot_eager" traces the same
    # forward and backward graphs without generating code (quick, for checking a recipe).
    compile_backend: Text = "inductor"
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"
    out: Text = ""

    @model_validator(mode="after")
    def _audio_resolves(self) -> TrainConfig:
        if "name" not in self.audio:
            raise ValueError("audio.name (an audio preset) is required")
        self.audio_config()  # fail early on a bad audio override
        return self

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
        try:
            base = get_preset(str(self.audio["name"]))
        except KeyError as exc:
            raise ConfigError(exc.args[0]) from None
        try:
            return AudioConfig(**{**base.model_dump(), **self.audio})
        except ValueError as exc:
            raise ConfigError(f"bad audio settings: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """Plain-typed dict (with the audio section fully resolved) for YAML and checkpoints."""
        out = self.model_dump(mode="json")
        out["audio"] = self.audio_config().model_dump(mode="json")
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Validate keys and types; every problem is one ``ConfigError`` naming the keys."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from exc


def _describe(exc: ValidationError) -> str:
    """One line per problem, with dotted keys, in the words a YAML author uses."""
    unknown: list[str] = []
    known: set[str] = set()
    problems: list[str] = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            unknown.append(key)
            owner = AugmentConfig if error["loc"][:1] == ("augment",) else TrainConfig
            known.update(owner.model_fields)
        elif error["type"] == "value_error":
            problems.append(str(error.get("ctx", {}).get("error", error["msg"])))
        else:
            problems.append(f"{key or 'config'}: {error['msg']} (got {error['input']!r})")
    if unknown:
        problems.insert(
            0, f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return "; ".join(problems)


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
    return TrainConfig.from_dict(deep_merge(cfg.model_dump(), overrides))


def load_yaml(path: Path | str) -> dict[str, Any]:
    """A YAML mapping from a file (safe loader: YAML config never executes code); a file that
    cannot be read or parsed is a ``ConfigError`` naming it, reported in one line."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def save_config(cfg: TrainConfig, path: Path | str) -> None:
    """Write the resolved config as YAML (what ``--resume``, evaluate and export read back)."""
    import yaml

    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
