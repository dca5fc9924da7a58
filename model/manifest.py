"""The artifact format: a directory holding ``model.onnx`` and ``manifest.json``.

The manifest is what lets a server run a model it knows nothing about: the ONNX input/outputs,
each head's labels and activation, and the front-end settings the model was trained with. This
module is the only place that knows the schema; it imports no torch so the service can use it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from arinext.model.audio_config import AudioConfig

__all__ = [
    "FORMAT_VERSION",
    "INPUT_NAME",
    "MANIFEST_FILE",
    "MAX_VOTES",
    "MODEL_FILE",
    "ArtifactError",
    "DetectionSettings",
    "HeadSpec",
    "Manifest",
    "Precision",
    "Provenance",
    "Quantization",
    "RefusedScheme",
    "ReparamLevel",
    "Threshold",
    "Verification",
    "Votes",
    "arinext_version",
    "read_manifest",
    "read_verified_model",
    "sha256_file",
    "verify_artifact",
    "write_manifest",
]

FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
INPUT_NAME = "logmel"
# The bounds of a detector's operating point, held once: the manifest's tuned values and every
# request's own (``/classify``, ``/v2``, the stream's start, the Python API, ``arinext predict``).
# The most consecutive windows a detection may need: ten seconds of windows at a 0.25 s hop.
MAX_VOTES = 40
Threshold = Annotated[float, Field(gt=0, le=1)]
Votes = Annotated[int, Field(ge=1, le=MAX_VOTES)]


class ReparamLevel(StrEnum):
    """How far a network is re-parameterised: the one vocabulary for code, CLI and manifest.

    ``NONE``: train form. ``PAPER``: the multi-scale mixers merged into one kernel each, identity
    add and the other BNs kept (the model the paper benchmarks). ``FULL``: identity folded into
    the centre tap and every BN into its conv, a plain conv/ReLU graph.
    """

    NONE = "none"
    PAPER = "paper"
    FULL = "full"


def arinext_version() -> str | None:
    """Installed version of this project (package metadata), None when run from a bare checkout."""
    try:
        return metadata.version("arinext")
    except metadata.PackageNotFoundError:
        return None


# Numeric format of the weights and activations in ``model.onnx`` (int8: a QDQ graph).
Precision = Literal["fp32", "int8"]


class ArtifactError(ValueError):
    """An artifact directory that must not be served: missing, malformed, tampered or too new."""


class HeadSpec(BaseModel):
    """One classification head: which ONNX output, which labels, which activation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    output: str = Field(min_length=1, description="ONNX output name holding this head's logits")
    labels: list[str] = Field(min_length=1, description="class names in output order")
    activation: Literal["softmax", "sigmoid"] = "softmax"


class Provenance(BaseModel):
    """Where the weights came from and how the artifact was made."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(default=None, description="checkpoint or run directory")
    command: str | None = None
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    arinext_version: str | None = None


class Verification(BaseModel):
    """How ONNX Runtime's logits were checked against the train-form torch model's.

    The tolerance scales with the logits (``atol + rtol * logit_scale``): float32 rounding grows
    with the magnitude of what a network computes, while a wrong fusion is off by a sizeable
    fraction of the logits themselves.
    """

    model_config = ConfigDict(extra="forbid")

    rule: Literal["max|onnx - torch| <= atol + rtol * max|torch|"] = (
        "max|onnx - torch| <= atol + rtol * max|torch|"
    )
    atol: float = Field(ge=0)
    rtol: float = Field(ge=0)
    logit_scale: float = Field(ge=0, description="max |train-form torch logit| over the batches")
    tolerance: float = Field(ge=0)
    max_abs_diff: float = Field(ge=0)
    batch_sizes: list[int]
    frames: int = Field(ge=1)


class RefusedScheme(BaseModel):
    """A quantisation scheme tried before the one written and refused by a guard, with what it
    measured on the same held-out clips (why the written scheme keeps more layers in fp32)."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field(description="quantiser and scheme, as ``Quantization.method``")
    top1_agreement: float = Field(ge=0, le=1)
    check_top1_int8: float | None = Field(default=None, ge=0, le=1)
    reason: str = Field(description="the guard it failed")


class Quantization(BaseModel):
    """How an int8 artifact was made from its fp32 source, and how closely it agrees with it.

    The figures come from held-out clips (never used for calibration) run through both graphs; an
    artifact is only written when ``top1_agreement >= min_agreement`` and, for labelled clips,
    ``check_top1_fp32 - check_top1_int8 <= max_top1_drop``.
    """

    model_config = ConfigDict(extra="forbid")

    method: str = Field(description="quantiser and scheme, e.g. static QDQ, u8 activations")
    source_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="the fp32 model.onnx")
    calibration: str = Field(description="where the calibration clips came from")
    calibration_clips: int = Field(ge=1)
    check_clips: int = Field(ge=1)
    top1_agreement: float = Field(ge=0, le=1, description="share of held-out views, all heads")
    max_prob_diff: float = Field(ge=0, description="largest |p_int8 - p_fp32| of any class")
    mean_prob_diff: float = Field(ge=0, description="mean over views of the largest |p diff|")
    check_top1_fp32: float | None = Field(
        default=None, ge=0, le=1, description="clip-level top-1 of fp32 on labelled check clips"
    )
    check_top1_int8: float | None = Field(default=None, ge=0, le=1)
    min_agreement: float = Field(ge=0, le=1, description="the agreement it had to reach")
    max_top1_drop: float = Field(ge=0, le=1, description="the top-1 loss it had to stay within")
    refused: list[RefusedScheme] = Field(
        default_factory=list, description="schemes tried first and refused, in order"
    )


class DetectionSettings(BaseModel):
    """The detector's operating point chosen for this model, on audio it was not trained on.

    Recordings and streams use it unless a request sets its own; an artifact without one gets
    the service's defaults (``arinext.service.detection``). Written by
    ``benchmarks/stream_tuning.py --record``.
    """

    model_config = ConfigDict(extra="forbid")

    threshold: Threshold = Field(description="score one of a run's windows needs")
    votes: Votes = Field(description="consecutive windows agreeing on a word")
    tuned_on: str = Field(min_length=1, description="the audio and the rule it was chosen by")
    measured: dict[str, Any] = Field(
        default_factory=dict, description="what it scored there, and the command"
    )


class Manifest(BaseModel):
    """Everything needed to serve ``model.onnx``."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    architecture: str
    architecture_params: dict[str, Any] = Field(
        default_factory=dict, description="constructor arguments that rebuild the network"
    )
    reparameterized: ReparamLevel
    frontend: AudioConfig
    input: str = INPUT_NAME
    heads: list[HeadSpec] = Field(min_length=1)
    num_params: int = Field(ge=0)
    gflops: float = Field(ge=0, description="multiply-adds per view, in billions")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    verification: Verification | None = Field(
        default=None, description="ONNX Runtime against the train-form torch model at export"
    )
    precision: Precision = "fp32"
    quantization: Quantization | None = Field(
        default=None, description="for int8 artifacts: calibration and agreement with fp32"
    )
    detection: DetectionSettings | None = Field(
        default=None, description="tuned detection settings (default: the service's)"
    )
    provenance: Provenance = Field(default_factory=Provenance)
    metrics: dict[str, Any] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict, description="e.g. the data recipe")

    @model_validator(mode="after")
    def _unique_heads(self) -> Manifest:
        names = [h.name for h in self.heads]
        outputs = [h.output for h in self.heads]
        if len(set(names)) != len(names) or len(set(outputs)) != len(outputs):
            raise ValueError("head names and outputs must be unique")
        if (self.precision == "int8") != (self.quantization is not None):
            raise ValueError("an int8 artifact needs its quantization record, fp32 none")
        return self

    def head(self, name: str) -> HeadSpec:
        """The head called ``name``."""
        for head in self.heads:
            if head.name == name:
                return head
        raise KeyError(name)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: Path | str) -> Manifest:
    """Parse and validate ``manifest.json``; refuses newer format versions."""
    path = Path(directory) / MANIFEST_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(
            f"{path}: no manifest (is {directory} an artifact directory?)"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable manifest: {exc}") from exc
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise ArtifactError(
            f"{path}: format_version {version!r} not supported "
            f"(this build reads 1..{FORMAT_VERSION})"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ArtifactError(f"{path}: invalid manifest: {exc}") from exc


def write_manifest(directory: Path | str, manifest: Manifest) -> Path:
    """Write ``manifest.json`` (pretty, stable key order) and return its path."""
    path = Path(directory) / MANIFEST_FILE
    path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path


def verify_artifact(directory: Path | str) -> Manifest:
    """Read the manifest and check that ``model.onnx`` is the file it describes."""
    manifest = read_manifest(directory)
    model_path = Path(directory) / MODEL_FILE
    if not model_path.is_file():
        raise ArtifactError(f"{model_path}: missing")
    try:
        actual = sha256_file(model_path)
    except OSError as exc:  # unreadable (permissions, a volume gone): not servable, say why
        raise ArtifactError(f"{model_path}: cannot be read: {exc.strerror or exc}") from None
    _check_sha256(model_path, actual, manifest)
    return manifest


def read_verified_model(directory: Path | str) -> tuple[Manifest, bytes]:
    """The manifest and the graph's bytes, read once and checked against the manifest's sha256.

    What is checked is what gets served: no file swapped between the check and the load, and no
    external-data file beside the graph (a graph opened from bytes cannot reach one).
    """
    manifest = read_manifest(directory)
    model_path = Path(directory) / MODEL_FILE
    try:
        graph = model_path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{model_path}: missing") from None
    except OSError as exc:
        raise ArtifactError(f"{model_path}: cannot be read: {exc.strerror or exc}") from None
    actual = hashlib.sha256(graph).hexdigest()
    _check_sha256(model_path, actual, manifest)
    return manifest, graph


def _check_sha256(model_path: Path, actual: str, manifest: Manifest) -> None:
    if actual != manifest.sha256:
        raise ArtifactError(
            f"{model_path}: sha256 {actual} does not match the manifest's {manifest.sha256}"
        )
