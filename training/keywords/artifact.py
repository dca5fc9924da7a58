"""The keyword network as an ordinary verified artifact, and its held-out voices' summary.

The network is exported by :func:`arinext.model.export.export_artifact` (ONNX Runtime checked
against PyTorch), quantised to int8 when that holds
(:func:`arinext.model.quantize.quantize_artifact`), and measured, as written, on the voices the
run held out.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from arinext.training.keywords.backbone import BATCH
from arinext.training.keywords.recipe import KeywordRecipe
from arinext.training.synth_speech import SAMPLE_RATE

if TYPE_CHECKING:
    from arinext.model.manifest import Manifest

__all__ = ["held_out_summary", "publish"]

log = logging.getLogger(__name__)

_CALIBRATION = "this run's synthesised clips: training voices calibrate, held-out voices check"


def _write_clips(root: Path, clips: Sequence[tuple[np.ndarray, str]], check: set[int]) -> None:
    """Clips in the Speech Commands layout (validation = the check set) for int8 calibration."""
    import soundfile as sf

    listed = []
    for i, (samples, label) in enumerate(clips):
        (root / label).mkdir(parents=True, exist_ok=True)
        sf.write(root / label / f"{i}.wav", samples, SAMPLE_RATE, subtype="FLOAT")
        if i in check:
            listed.append(f"{label}/{i}.wav\n")
    (root / "validation_list.txt").write_text("".join(listed), encoding="utf-8")


def publish(
    net: Any,
    out: Path,
    name: str,
    backbone_manifest: Manifest,
    frontend: Any,
    classes: list[str],
    recipe: KeywordRecipe,
    calibration: Sequence[tuple[np.ndarray, str]],
    check: set[int],
    extra: dict[str, Any],
    overwrite: bool,
) -> Any:
    """Export fp32, quantise to int8 when the quantiser's guards hold, and publish to ``out``.

    ``calibration`` are placed clips with their labels; those whose index is in ``check`` check
    the int8 network, the others calibrate it; the backbone's manifest gives the architecture
    and re-parameterisation. Returns the written manifest.
    """
    from arinext.model.export import default_provenance, export_artifact
    from arinext.model.manifest import MODEL_FILE, read_manifest
    from arinext.model.publish import publish_artifact
    from arinext.model.quantize import QuantizeError, quantize_artifact

    with tempfile.TemporaryDirectory(prefix="arinext-keywords-") as tmp:
        fp32 = Path(tmp) / "fp32"
        export_artifact(
            net,
            fp32,
            name=name,
            architecture=backbone_manifest.architecture,
            frontend=frontend,
            labels={net.head_names[0]: classes},
            level=backbone_manifest.reparameterized,
            provenance=default_provenance("arinext train-keywords"),
            extra=extra,
        )
        if recipe.int8:
            clips = Path(tmp) / "clips"
            _write_clips(clips, calibration, check)
            try:
                int8 = quantize_artifact(
                    fp32,
                    out,
                    calibration=clips,
                    name=name,
                    seed=recipe.seed,
                    provenance=default_provenance("arinext train-keywords"),
                    overwrite=overwrite,
                )
            except QuantizeError as exc:
                log.warning("int8 does not hold (%s): writing the fp32 artifact", exc)
            else:
                assert int8.quantization is not None
                int8.quantization.calibration = _CALIBRATION
                return int8
        result = read_manifest(fp32)
        publish_artifact(out, (fp32 / MODEL_FILE).read_bytes(), result)
        return result


def held_out_summary(
    artifact: Path,
    views: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    voices: list[str],
    threads: int,
) -> dict:
    """The written artifact (ONNX Runtime) on the held-out voices' log-mel ``views``: top-1 on
    the phrases, false alarms of the rest, per phrase."""
    from arinext.model.backends import open_session
    from arinext.model.manifest import read_manifest
    from arinext.model.scores import probabilities
    from arinext.training.keyword_report import keyword_report

    (head,) = read_manifest(artifact).heads
    session = open_session(
        artifact / "model.onnx", backend="onnxruntime", precision="auto", threads=threads
    )
    batches = views[:, None]
    logits = np.concatenate(
        [
            session.run([head.output], {"logmel": batches[s : s + BATCH]})[0]
            for s in range(0, len(batches), BATCH)
        ]
    )
    report = keyword_report(probabilities(logits, "softmax"), labels, names, voices)
    keep = ("top1", "keyword_top1", "keyword_clips", "false_alarm_rate", "false_alarm_threshold")
    return {
        **{k: report[k] for k in keep},
        "non_keyword_clips": report["non_keyword_clips"],
        "per_phrase": report["per_keyword"],
    }
