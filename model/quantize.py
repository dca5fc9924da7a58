"""Int8 artifacts: static quantisation of an fp32 artifact, checked against it before writing.

The scheme is the one that measures fastest for this network on x86 CPUs (VNNI): ONNX Runtime's
static quantisation in QDQ format, uint8 activations (asymmetric) and int8 weights per output
channel (symmetric). With int8 activations ORT falls back to slower kernels, and the QOperator
format runs several times slower than fp32 here; QDQ is also what OpenVINO reads as int8.

Activation ranges are calibrated on real clips turned into log-mels by the artifact's own
front-end (the manifest's settings, ``arinext.model.frontend``), so the ranges are those the served
model will see. The result is then run against the fp32 artifact on held-out clips; top-1 agreement,
the largest probability difference and (for labelled clips) both top-1 accuracies go into the
manifest. Each scheme of layers kept fp32 (``SCHEMES``) is tried in turn, and the first graph
that passes two guards is written; when every scheme fails one, nothing is:

- top-1 agreement below ``min_agreement`` (0.99). Where the two graphs agree on top-1 they are
  equally right, so int8 accuracy can differ from fp32's by at most the disagreement rate: 0.99
  caps the worst case at 1 point for any clips, labelled or not. In practice the flips happen on
  clips near a decision boundary, where fp32 is often wrong too, so the real change is smaller;
- when the clips are labelled (a folder per class, named like a head's labels), int8 clip-level
  top-1 more than ``max_top1_drop`` (0.5 points) below fp32's: the accuracy target itself.

What these guards gave on the default models is in docs/performance.md.

Clip folders: every audio file below the folder (sorted, then shuffled with the seed). A folder
in the Speech Commands layout keeps its splits apart: clips in ``testing_list.txt`` are never
used, clips in ``validation_list.txt`` are the check clips and the rest calibrate. Without a
folder, seeded synthetic sounds (noise colours, voiced harmonic tones, chirps, clicks, near
silence, at many levels) calibrate and check; that works but says less, hence a warning.

Torch-free: this needs ``onnxruntime`` and ``onnx`` (its quantiser) and the audio decoder.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arinext.model.audio_config import AudioConfig
from arinext.model.backends import BackendError, Session, open_session
from arinext.model.frontend import log_mel_views
from arinext.model.manifest import (
    MODEL_FILE,
    ArtifactError,
    Manifest,
    Provenance,
    Quantization,
    RefusedScheme,
    arinext_version,
    verify_artifact,
)
from arinext.model.publish import destination_problem, publish_artifact
from arinext.model.scores import probabilities

__all__ = [
    "AUDIO_SUFFIXES",
    "DEFAULT_CALIBRATION_CLIPS",
    "DEFAULT_CHECK_CLIPS",
    "DEFAULT_MAX_TOP1_DROP",
    "DEFAULT_MIN_AGREEMENT",
    "METHOD",
    "SCHEMES",
    "Agreement",
    "ClipViews",
    "QuantizeError",
    "Scheme",
    "agreement",
    "clip_views",
    "float_ends",
    "float_mixing_paths",
    "quantize_artifact",
    "quantize_graph",
    "split_clips",
    "synthetic_views",
]

logger = logging.getLogger(__name__)

DEFAULT_MIN_AGREEMENT = 0.99
DEFAULT_MAX_TOP1_DROP = 0.005
DEFAULT_CALIBRATION_CLIPS = 256
DEFAULT_CHECK_CLIPS = 1000
METHOD = (
    "onnxruntime static QDQ; uint8 activations (asymmetric, MinMax calibration); "
    "int8 weights per output channel (symmetric)"
)
AUDIO_SUFFIXES = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".mp4", ".aac", ".webm", ".mka"}
)
_TEST_LIST = "testing_list.txt"
_VALIDATION_LIST = "validation_list.txt"
_MAX_CLIP_SECONDS = 600.0
_CALIBRATION_BATCH = 8
_CHECK_BATCH = 32


class QuantizeError(RuntimeError):
    """The artifact cannot be quantised or the int8 graph is not faithful; nothing was written."""


@dataclass(frozen=True)
class ClipViews:
    """Log-mel views ``(n, 1, frames, mels)`` of some clips, and where they came from.

    ``owner`` is the clip index of each view; ``labels`` each clip's folder name (its class in a
    folder-per-class layout), empty for synthetic clips.
    """

    views: np.ndarray
    owner: np.ndarray
    labels: list[str]
    source: str

    @property
    def clips(self) -> int:
        """Number of clips the views came from."""
        return int(self.owner.max()) + 1 if len(self.owner) else 0


def _listed(folder: Path, name: str) -> set[str]:
    path = folder / name
    if not path.is_file():
        return set()
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def split_clips(folder: Path, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """Calibration and check candidates below ``folder``, disjoint, each in a seeded order.

    The test split of a Speech Commands layout is left out entirely; its validation split is the
    check set. Otherwise the shuffled files are halved.
    """
    if not folder.is_dir():
        raise QuantizeError(f"{folder}: not a directory of audio clips")
    found = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )
    test = _listed(folder, _TEST_LIST)
    validation = _listed(folder, _VALIDATION_LIST)
    usable = [p for p in found if p.relative_to(folder).as_posix() not in test]
    rng = np.random.default_rng(seed)
    order = [usable[i] for i in rng.permutation(len(usable))]
    if validation:
        check = [p for p in order if p.relative_to(folder).as_posix() in validation]
        calibration = [p for p in order if p.relative_to(folder).as_posix() not in validation]
    else:
        half = (len(order) + 1) // 2
        calibration, check = order[:half], order[half:]
    return calibration, check


def clip_views(paths: Sequence[Path], cfg: AudioConfig, limit: int, source: str) -> ClipViews:
    """Decode up to ``limit`` clips (skipping undecodable files) into the artifact's log-mels."""
    from arinext.model.audio_io import AudioError, decode_resampled

    views: list[np.ndarray] = []
    labels: list[str] = []
    skipped = 0
    for path in paths:
        if len(views) == limit:
            break
        try:
            audio = decode_resampled(path.read_bytes(), [cfg.sample_rate], _MAX_CLIP_SECONDS)
        except (AudioError, OSError) as exc:
            skipped += 1
            logger.warning("skipping %s: %s", path, exc)
            continue
        samples = audio.at_rate[cfg.sample_rate]
        if samples.size == 0:
            skipped += 1
            continue
        views.append(log_mel_views(samples, cfg).astype(np.float32))
        labels.append(path.parent.name)
    if skipped:
        logger.warning(
            "%s: %d of %d files could not be decoded", source, skipped, len(views) + skipped
        )
    if not views:
        raise QuantizeError(f"{source}: no decodable audio clips")
    owner = np.concatenate([np.full(len(v), i) for i, v in enumerate(views)])
    return ClipViews(np.concatenate(views), owner, labels, source)


def _synthetic_clip(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    kind = rng.integers(5)
    if kind == 0:  # white, pink or brown noise
        white = rng.standard_normal(n)
        spectrum = np.fft.rfft(white) / np.maximum(np.arange(n // 2 + 1), 1) ** rng.uniform(0, 1)
        signal = np.fft.irfft(spectrum, n)
    elif kind == 1:  # a voiced sound: harmonics of a gliding f0 under a syllable envelope
        f0 = rng.uniform(80, 300) * (1 + rng.uniform(-0.2, 0.2) * t / t[-1])
        phase = 2 * np.pi * np.cumsum(f0) / rate
        signal = np.asarray(sum(np.sin(k * phase) / k for k in range(1, 16)))
        centre, width = rng.uniform(0.2, 0.8) * t[-1], rng.uniform(0.05, 0.3) * t[-1]
        signal = signal * np.exp(-0.5 * ((t - centre) / width) ** 2)
    elif kind == 2:  # a chirp
        f1, f2 = rng.uniform(50, rate / 2.5, size=2)
        signal = np.sin(2 * np.pi * (f1 * t + (f2 - f1) * t**2 / (2 * t[-1])))
    elif kind == 3:  # clicks
        signal = np.zeros(n)
        signal[rng.integers(n, size=rng.integers(1, 20))] = 1.0
    else:  # near silence
        signal = rng.standard_normal(n) * 1e-3
    signal = signal + rng.standard_normal(n) * 10 ** rng.uniform(-5, -2)
    peak = float(np.abs(signal).max()) or 1.0
    return (signal / peak * 10 ** (rng.uniform(-50, -1) / 20)).astype(np.float32)


def synthetic_views(cfg: AudioConfig, count: int, seed: int) -> ClipViews:
    """``count`` seeded synthetic clips of one view each, through the artifact's front-end."""
    rng = np.random.default_rng(seed)
    views = [
        log_mel_views(_synthetic_clip(rng, cfg.clip_samples, cfg.sample_rate), cfg, views=1)
        for _ in range(count)
    ]
    return ClipViews(np.concatenate(views).astype(np.float32), np.arange(count), [], "synthetic")


class _Reader:
    """The quantiser's calibration reader: the views in batches, under the graph's input name.

    ``__len__`` and ``set_range`` let the quantiser take one batch at a time (its
    ``CalibStridedMinMax`` mode) and merge ranges as it goes, so calibration holds one batch's
    intermediate tensors, not every clip's (gigabytes for b1 at 512 frames).
    """

    def __init__(self, input_name: str, views: np.ndarray) -> None:
        self._batches = [
            {input_name: views[i : i + _CALIBRATION_BATCH]}
            for i in range(0, len(views), _CALIBRATION_BATCH)
        ]
        self._pending: Iterator[dict[str, np.ndarray]] = iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._pending = iter(self._batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._pending, None)


def float_ends(model_path: Path) -> list[str]:
    """In a network of several convolutions, the names of the one that reads the graph's input
    (the stem) and of the Gemm/MatMul nodes that write its outputs (the classifier heads).

    They are where int8 costs the most accuracy for the least speed: the stem sees the log-mel's
    whole dynamic range through a single input channel, and a head's logits are the answer
    itself. Quantising them too flipped more held-out answers of the default model of commit
    3b83404 than keeping them in fp32, enough to fall under the agreement guard
    (docs/performance.md).
    """
    graph = _network(model_path)
    if graph is None:
        return []
    return _stems(graph) + _heads(graph)


def float_mixing_paths(model_path: Path) -> list[str]:
    """:func:`float_ends` and each block's mixing path: its depthwise band mixers and the
    convolution that feeds them. What goes int8 is the rest: the inverted bottlenecks' 1x1
    convolutions (most of the time), the shortcuts and the residual adds.

    A depthwise kernel quantises each channel's long band filter on its own, with no sum over
    channels to average the rounding out: on the default model, quantising the mixing paths too
    flipped enough held-out answers to fall under the agreement guard (docs/performance.md,
    "Int8").
    """
    graph = _network(model_path)
    if graph is None:
        return []
    convs = [node for node in graph.node if node.op_type == "Conv"]
    weights = {t.name: list(t.dims) for t in graph.initializer}
    depthwise = {node.name for node in convs if _is_depthwise(node, weights)}
    # A tensor's producer, looking through activations (a conv -> ReLU -> mixer chain).
    producer = {out: node for node in graph.node for out in node.output}

    def feeder(tensor: str) -> Any:
        node = producer.get(tensor)
        while node is not None and node.op_type in _ACTIVATIONS:
            node = producer.get(node.input[0])
        return node

    feeding = {
        fed.name
        for node in convs
        if node.name in depthwise
        and (fed := feeder(node.input[0])) is not None
        and fed.op_type == "Conv"
        and fed.name not in depthwise
    }
    kept = set(_stems(graph)) | depthwise | feeding
    return [node.name for node in convs if node.name in kept] + _heads(graph)


def _network(model_path: Path) -> Any:
    """The graph of ``model_path``, or None for a graph of fewer than two convolutions (a probe
    graph, quantised whole)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return graph if sum(node.op_type == "Conv" for node in graph.node) >= 2 else None


def _stems(graph: Any) -> list[str]:
    """The convolutions that read the graph's input."""
    inputs = {i.name for i in graph.input}
    return [n.name for n in graph.node if n.op_type == "Conv" and inputs.intersection(n.input)]


def _heads(graph: Any) -> list[str]:
    """The Gemm/MatMul nodes that write the graph's outputs."""
    outputs = {o.name for o in graph.output}
    return [
        node.name
        for node in graph.node
        if node.op_type in ("Gemm", "MatMul") and outputs.intersection(node.output)
    ]


_ACTIVATIONS = frozenset({"Relu", "LeakyRelu", "Clip", "Gelu"})


def _is_depthwise(conv: Any, weights: dict[str, list[int]]) -> bool:
    """A convolution of several groups, one input channel each."""
    group = next((a.i for a in conv.attribute if a.name == "group"), 1)
    dims = weights.get(conv.input[1], [])
    return group > 1 and len(dims) > 1 and dims[1] == 1


@dataclass(frozen=True)
class Scheme:
    """Which layers of a network stay fp32 when the rest goes int8."""

    kept_fp32: str  # in words, recorded in the artifact's quantization method
    float_layers: Callable[[Path], list[str]]


# Tried in order by quantize_artifact; the first whose graph passes both guards is written. The
# whole body in int8 is the faster on ONNX Runtime at long inputs (fp32 depthwise layers inside
# an int8 graph run outside its blocked layout there); keeping the mixing paths fp32 holds
# accuracy where the first does not, as on the default model (docs/performance.md, "Int8").
SCHEMES: tuple[Scheme, ...] = (
    Scheme("the stem and the classifier heads kept fp32", float_ends),
    Scheme(
        "the stem, the band mixers and the 1x1 convolutions that feed them, and the classifier "
        "heads kept fp32",
        float_mixing_paths,
    ),
)


def quantize_graph(
    model_path: Path, input_name: str, calibration: np.ndarray, scheme: Scheme = SCHEMES[0]
) -> bytes:
    """The int8 QDQ graph of the fp32 ONNX file ``model_path``, calibrated on ``calibration``,
    with ``scheme``'s layers kept fp32."""
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise QuantizeError(
            f"quantisation needs onnx and onnxruntime ({exc}); pip install 'arinext[quantize]'"
        ) from exc

    class Reader(_Reader, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory(prefix="arinext-quantize-") as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        try:
            quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(quantized),
                Reader(input_name, calibration),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                nodes_to_exclude=scheme.float_layers(prepared),
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"CalibStridedMinMax": 1},
            )
        except Exception as exc:  # the quantiser raises whatever onnx or ORT raised
            raise QuantizeError(f"ONNX Runtime could not quantise {model_path}: {exc}") from exc
        return quantized.read_bytes()


@dataclass(frozen=True)
class Agreement:
    """How an int8 graph's answers compare with fp32's on the same views."""

    top1_agreement: float  # share of (view, head) pairs with the same top-1
    max_prob_diff: float  # largest |p_int8 - p_fp32| of any class
    mean_prob_diff: float  # mean over (view, head) of the largest |p diff|
    top1_fp32: float | None  # clip-level accuracy where the clips' folders are a head's labels
    top1_int8: float | None


def _labelled_head(manifest: Manifest, labels: Sequence[str]) -> int | None:
    """The head whose labels name every clip's folder (folder-per-class layout), if one does."""
    if not labels:
        return None
    for i, head in enumerate(manifest.heads):
        if set(labels) <= set(head.labels):
            return i
    return None


def agreement(
    reference: Session, candidate: Session, manifest: Manifest, check: ClipViews
) -> Agreement:
    """Compare two graphs on ``check``; with labelled clips, also their clip-level top-1."""
    outputs = [h.output for h in manifest.heads]
    probs: list[list[np.ndarray]] = [[], []]
    same, total, worst, diffs = 0, 0, 0.0, []
    labelled = _labelled_head(manifest, check.labels)
    for i in range(0, len(check.views), _CHECK_BATCH):
        feed = {manifest.input: check.views[i : i + _CHECK_BATCH]}
        pairs = zip(reference.run(outputs, feed), candidate.run(outputs, feed), strict=True)
        for h, (head, (a, b)) in enumerate(zip(manifest.heads, pairs, strict=True)):
            pa, pb = probabilities(a, head.activation), probabilities(b, head.activation)
            if not np.isfinite(pb).all():
                return Agreement(0.0, float("inf"), float("inf"), None, None)
            same += int((pa.argmax(axis=-1) == pb.argmax(axis=-1)).sum())
            total += len(pa)
            diff = np.abs(pa - pb).max(axis=-1)
            worst = max(worst, float(diff.max()))
            diffs.append(diff)
            if h == labelled:
                probs[0].append(pa)
                probs[1].append(pb)
    accuracy: list[float | None] = [None, None]
    if labelled is not None:
        head = manifest.heads[labelled]
        truth = np.array([head.labels.index(label) for label in check.labels])
        for k in (0, 1):
            views = np.concatenate(probs[k])
            clip = np.zeros((check.clips, views.shape[1]))
            np.add.at(clip, check.owner, views)  # windows averaged, as the service does
            accuracy[k] = float((clip.argmax(axis=1) == truth).mean())
    return Agreement(
        same / total, worst, float(np.concatenate(diffs).mean()), accuracy[0], accuracy[1]
    )


def _load(source: Path) -> tuple[Manifest, Session]:
    try:
        manifest = verify_artifact(source)
    except ArtifactError as exc:
        raise QuantizeError(f"not a servable artifact: {exc}") from exc
    if manifest.precision != "fp32":
        raise QuantizeError(f"{source} is already {manifest.precision}; quantise its fp32 source")
    try:
        session = open_session(source / MODEL_FILE, threads=1)
    except BackendError as exc:
        raise QuantizeError(f"{source}: {exc}") from exc
    return manifest, session


def quantize_artifact(
    source: Path | str,
    out: Path | str,
    *,
    calibration: Path | str | None = None,
    calibration_clips: int = DEFAULT_CALIBRATION_CLIPS,
    check_clips: int = DEFAULT_CHECK_CLIPS,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    max_top1_drop: float = DEFAULT_MAX_TOP1_DROP,
    name: str | None = None,
    seed: int = 0,
    provenance: Provenance | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Write the int8 version of the fp32 artifact ``source`` to ``out``; returns its manifest.

    ``calibration`` is a folder of clips (see the module docstring), or None for synthetic
    sounds. Raises :class:`QuantizeError`, writing nothing, when ``source`` is not a verified
    fp32 artifact, ``out`` is something other than an artifact, there are no usable clips, or
    the graph of every scheme in ``SCHEMES`` fails a guard: held-out top-1 agreement below
    ``min_agreement``, or labelled held-out clips losing more than ``max_top1_drop`` top-1
    accuracy.
    """
    source, out = Path(source), Path(out)
    if name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise QuantizeError(f"invalid artifact name {name!r} (letters, digits, '_', '.', '-')")
    if not 0 <= min_agreement <= 1:
        raise QuantizeError(f"min_agreement must be within 0..1, got {min_agreement}")
    if not 0 <= max_top1_drop <= 1:
        raise QuantizeError(f"max_top1_drop must be within 0..1, got {max_top1_drop}")
    if calibration_clips < 1 or check_clips < 1:
        raise QuantizeError("calibration_clips and check_clips must be at least 1")
    if problem := destination_problem(out, overwrite):
        raise QuantizeError(problem)
    if out.resolve() == source.resolve():
        raise QuantizeError(f"{out} is the source artifact; write the int8 artifact elsewhere")
    manifest, reference = _load(source)
    cfg = manifest.frontend
    if calibration is None:
        logger.warning(
            "no calibration clips given: calibrating and checking on synthetic sounds; "
            "pass --calibration with clips like the ones the model will serve for a real check"
        )
        calibrate = synthetic_views(cfg, calibration_clips, seed)
        check = synthetic_views(cfg, check_clips, seed + 1)
    else:
        folder = Path(calibration)
        calibration_paths, check_paths = split_clips(folder, seed)
        if not calibration_paths or not check_paths:
            raise QuantizeError(
                f"{folder}: found {len(calibration_paths)} calibration and {len(check_paths)} "
                f"check clips (audio files: {', '.join(sorted(AUDIO_SUFFIXES))}); both must be "
                f"non-empty"
            )
        calibrate = clip_views(calibration_paths, cfg, calibration_clips, f"{folder} (calibration)")
        check = clip_views(check_paths, cfg, check_clips, f"{folder} (check)")
    logger.info(
        "calibrating on %d views of %d clips, checking on %d views of %d held-out clips",
        len(calibrate.views),
        calibrate.clips,
        len(check.views),
        check.clips,
    )
    refusals: list[str] = []
    refused: list[RefusedScheme] = []
    tried: list[list[str]] = []
    for scheme in SCHEMES:
        kept = scheme.float_layers(source / MODEL_FILE)
        if kept in tried:  # the same graph as a scheme already refused (a probe graph, say)
            continue
        tried.append(kept)
        data = quantize_graph(source / MODEL_FILE, manifest.input, calibrate.views, scheme)
        try:
            candidate = open_session(data, threads=1)
        except BackendError as exc:
            raise QuantizeError(f"the int8 graph does not load: {exc}") from exc
        found = agreement(reference, candidate, manifest, check)
        accuracy = (
            ""
            if found.top1_fp32 is None
            else f"; top-1 fp32 {found.top1_fp32:.2%}, int8 {found.top1_int8:.2%}"
        )
        summary = (
            f"int8 ({scheme.kept_fp32}) top-1 agrees with fp32 on {found.top1_agreement:.2%} of "
            f"{len(check.views)} held-out views (max |p diff| {found.max_prob_diff:.3f}){accuracy}"
        )
        logger.info("%s", summary)
        fp32, int8 = found.top1_fp32, found.top1_int8
        if found.top1_agreement < min_agreement:
            reason = f"agreement is below the threshold {min_agreement:.2%}"
        elif fp32 is not None and int8 is not None and fp32 - int8 > max_top1_drop:
            reason = f"top-1 drops by more than {max_top1_drop:.2%}"
        else:
            break
        logger.info("refused: %s", reason)
        refused.append(
            RefusedScheme(
                method=f"{METHOD}; {scheme.kept_fp32}",
                top1_agreement=round(found.top1_agreement, 6),
                check_top1_int8=int8,
                reason=reason,
            )
        )
        refusals.append(f"{summary}: {reason}")
    else:
        raise QuantizeError("; ".join(refusals) + "; nothing written")
    record = Quantization(
        method=f"{METHOD}; {scheme.kept_fp32}",
        source_sha256=manifest.sha256,
        calibration=calibrate.source if calibration is None else str(calibration),
        calibration_clips=calibrate.clips,
        check_clips=check.clips,
        top1_agreement=round(found.top1_agreement, 6),
        max_prob_diff=round(found.max_prob_diff, 6),
        mean_prob_diff=round(found.mean_prob_diff, 6),
        check_top1_fp32=found.top1_fp32,
        check_top1_int8=found.top1_int8,
        min_agreement=min_agreement,
        max_top1_drop=max_top1_drop,
        refused=refused,
    )
    quantized = manifest.model_copy(
        update={
            "name": name or manifest.name,
            "precision": "int8",
            "quantization": record,
            "sha256": hashlib.sha256(data).hexdigest(),
            "provenance": provenance
            or Provenance(source=str(source), arinext_version=arinext_version()),
            # Measured metrics belong to the fp32 graph they were measured on, and so does a
            # tuned detection operating point: the int8 graph is tuned on its own.
            "metrics": {"fp32": manifest.metrics} if manifest.metrics else {},
            "detection": None,
        }
    )
    quantized = Manifest.model_validate(quantized.model_dump())
    publish_artifact(out, data, quantized)
    logger.info("wrote %s (int8, %.1f MB)", out, len(data) / 1e6)
    return quantized
