"""Turn a trained torch model into a served artifact: ``model.onnx`` + ``manifest.json``.

The artifact is the only thing the torch-free service ever sees, so this is where a model is
proven servable: it is re-parameterised to the requested level, exported with a fixed input/output
contract (``logmel`` in, ``logits_<head>`` out, batch and frames dynamic), checked by the ONNX
checker and run by ONNX Runtime against the *train-form* torch model. Only when all of that
passes is the directory written, atomically, so a half-exported or wrong model can never be
picked up by a server watching the output directory.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shlex
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import torch
from pydantic import ValidationError
from torch import Tensor, nn

from arinext.model.audio_config import AudioConfig
from arinext.model.backends import open_session
from arinext.model.complexity import count_macs, count_params
from arinext.model.manifest import (
    INPUT_NAME,
    HeadSpec,
    Manifest,
    Provenance,
    ReparamLevel,
    Verification,
    arinext_version,
)
from arinext.model.publish import destination_problem, publish_artifact
from arinext.model.reparam import reparameterize_model

__all__ = [
    "VERIFY_ATOL",
    "VERIFY_BATCH_SIZES",
    "VERIFY_RTOL",
    "ExportError",
    "default_provenance",
    "export_artifact",
    "output_name",
]

logger = logging.getLogger(__name__)


# Batch 1 is what the service runs most; 3 catches graphs that baked in the traced batch size.
VERIFY_BATCH_SIZES: tuple[int, ...] = (1, 3)
# ONNX Runtime must agree with the train-form torch logits to atol + rtol * max|logit|: float32
# rounding grows with what the network computes (a correct B1 export with randomised BN differs
# by ~1e-4 at logits of ~1), while a wrong fusion is off by a sizeable fraction of the logits.
VERIFY_ATOL = 1e-4
VERIFY_RTOL = 1e-4
_TRACE_BATCH = 1
_PLACEHOLDER_SHA = "0" * 64


class ExportError(RuntimeError):
    """The model could not be exported, or the exported graph does not compute what torch does."""


def output_name(head: str) -> str:
    """ONNX output name holding ``head``'s logits."""
    return f"logits_{head}"


def default_provenance(source: str | None = None) -> Provenance:
    """Provenance recording the current command line, time and project version.

    The command is recorded as ``arinext <arguments>``: ``sys.argv[0]`` is wherever this machine
    keeps the program, a path that must not travel inside a shipped artifact.
    """
    command = shlex.join(["arinext", *sys.argv[1:]])
    return Provenance(source=source, command=command, arinext_version=arinext_version())


class _TupleOutputs(nn.Module):
    """ONNX outputs are positional; this fixes the head order so output names line up."""

    def __init__(self, model: nn.Module, head_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.head_names = tuple(head_names)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        outputs = self.model(x)
        return tuple(outputs[name] for name in self.head_names)


def _reparameterize(model: nn.Module, level: ReparamLevel) -> nn.Module:
    if level is ReparamLevel.NONE:
        return model
    try:
        return reparameterize_model(model, level, inplace=False)
    except Exception as exc:
        raise ExportError(f"re-parameterisation to level {level!r} failed: {exc}") from exc


def _verification_inputs(frontend: AudioConfig, device: torch.device) -> list[Tensor]:
    """Seeded batches with log-mel-like statistics (mean -4, std 2), reproducible on failure."""
    generator = torch.Generator().manual_seed(0)
    shape = (1, frontend.num_frames, frontend.n_mels)
    return [
        (torch.randn(n, *shape, generator=generator) * 2 - 4).to(device) for n in VERIFY_BATCH_SIZES
    ]


def _torch_logits(model: nn.Module, x: Tensor, head_names: Sequence[str]) -> list[np.ndarray]:
    with torch.no_grad():
        outputs = model(x)
    return [outputs[name].detach().float().cpu().numpy() for name in head_names]


def _to_onnx(
    model: nn.Module, head_names: Sequence[str], frontend: AudioConfig, opset: int
) -> bytes:
    """Export in memory, so that nothing touches the disk before verification has passed."""
    wrapped = _TupleOutputs(model, head_names).eval()
    device = next(model.parameters()).device
    example = torch.zeros(_TRACE_BATCH, 1, frontend.num_frames, frontend.n_mels, device=device)
    outputs = [output_name(name) for name in head_names]
    dynamic_axes: dict[str, dict[int, str]] = {INPUT_NAME: {0: "batch", 2: "frames"}}
    dynamic_axes.update({name: {0: "batch"} for name in outputs})
    buffer = io.BytesIO()
    try:
        # The TorchScript exporter: the dynamo one needs onnxscript and is much slower for
        # these plain conv graphs. Its deprecation notice is expected, not news to the user.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                wrapped,
                (example,),
                buffer,  # type: ignore[arg-type]  # a file object works; the stub says path
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=outputs,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
            )
    except Exception as exc:
        raise ExportError(f"ONNX export failed: {exc}") from exc
    data = buffer.getvalue()
    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except Exception as exc:
        raise ExportError(f"exported graph fails the ONNX checker: {exc}") from exc
    return data


def _onnx_logits(data: bytes, inputs: Sequence[Tensor]) -> list[list[np.ndarray]]:
    try:
        session = open_session(data)
        return [session.run(session.output_names, {INPUT_NAME: x.cpu().numpy()}) for x in inputs]
    except Exception as exc:
        raise ExportError(f"ONNX Runtime cannot run the exported graph: {exc}") from exc


def _max_abs_diff(expected: Sequence[np.ndarray], actual: Sequence[np.ndarray]) -> float:
    worst = 0.0
    for want, got in zip(expected, actual, strict=True):
        if want.shape != got.shape:
            raise ExportError(f"ONNX output shape {got.shape} differs from torch's {want.shape}")
        diff = np.abs(want.astype(np.float64) - got.astype(np.float64))
        # NaN compares false everywhere, so it must be caught explicitly.
        worst = max(worst, float(diff.max()) if np.all(np.isfinite(diff)) else float("inf"))
    return worst


def export_artifact(
    model: nn.Module,
    out_dir: Path | str,
    *,
    name: str,
    architecture: str,
    frontend: AudioConfig,
    labels: Mapping[str, Sequence[str]],
    level: ReparamLevel | str = ReparamLevel.FULL,
    activation: Literal["softmax", "sigmoid"] = "softmax",
    provenance: Provenance | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    opset: int = 17,
    atol: float = VERIFY_ATOL,
    rtol: float = VERIFY_RTOL,
    overwrite: bool = False,
) -> Manifest:
    """Export ``model`` (train form) as a verified artifact directory ``out_dir``.

    ``level`` picks the inference form: ``"none"`` exports the model as is, ``"paper"`` merges
    the multi-scale mixers (the paper's benchmarked model), ``"full"`` folds every BN and the
    identity too. The caller's model is never modified (its train/eval mode is restored).
    Raises ``ExportError`` without writing anything when ONNX Runtime's logits differ from the
    train-form torch logits by more than ``atol + rtol * max|logit|`` (recorded in the manifest's
    ``verification``), or when ``out_dir`` exists and is not an artifact (unless ``overwrite``).
    """
    out = Path(out_dir)
    try:
        level = ReparamLevel(level)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in ReparamLevel)
        raise ExportError(f"level must be one of {choices}, got {level!r}") from None
    if problem := destination_problem(out, overwrite):
        raise ExportError(problem)
    head_names = [str(h) for h in getattr(model, "head_names", ())]
    if not head_names or set(labels) != set(head_names):
        raise ExportError(f"labels are for heads {sorted(labels)}, the model has {head_names}")
    # Validate the metadata before spending time on the export.
    try:
        manifest = Manifest(
            name=name,
            architecture=architecture,
            architecture_params=dict(getattr(model, "architecture_params", {})),
            reparameterized=level,
            frontend=frontend,
            heads=[
                HeadSpec(
                    name=head,
                    output=output_name(head),
                    labels=list(labels[head]),
                    activation=activation,
                )
                for head in head_names
            ],
            num_params=0,
            gflops=0.0,
            sha256=_PLACEHOLDER_SHA,
            provenance=provenance if provenance is not None else default_provenance(),
            metrics=dict(metrics or {}),
            extra=dict(extra or {}),
        )
    except ValidationError as exc:
        raise ExportError(f"invalid artifact metadata: {exc}") from exc

    was_training = model.training
    model.eval()
    try:
        inputs = _verification_inputs(frontend, next(model.parameters()).device)
        expected = [_torch_logits(model, x, head_names) for x in inputs]
        for head, logits in zip(head_names, expected[0], strict=True):
            if logits.shape[-1] != len(labels[head]):
                raise ExportError(
                    f"head {head!r} has {logits.shape[-1]} outputs but {len(labels[head])} labels"
                )
        inference = _reparameterize(model, level)
        data = _to_onnx(inference, head_names, frontend, opset)
        actual = _onnx_logits(data, inputs)
        max_diff = max(_max_abs_diff(e, a) for e, a in zip(expected, actual, strict=True))
        scale = max(float(np.abs(logits).max()) for batch in expected for logits in batch)
        tolerance = atol + rtol * scale
        logger.info(
            "%s (%s, level %s): max |onnx - torch train form| = %.3g (tolerance %.3g at logit "
            "scale %.3g) over batches %s x %d frames",
            name,
            architecture,
            level.value,
            max_diff,
            tolerance,
            scale,
            VERIFY_BATCH_SIZES,
            frontend.num_frames,
        )
        if not max_diff <= tolerance:
            raise ExportError(
                f"ONNX Runtime logits differ from the torch model's by {max_diff:.3g} "
                f"(tolerance {tolerance:.3g} = {atol:g} + {rtol:g} x max|logit| {scale:.3g}); "
                "nothing written"
            )
        num_params = count_params(inference)
        macs = count_macs(inference, frames=frontend.num_frames, mel_bins=frontend.n_mels)
    finally:
        model.train(was_training)

    manifest = manifest.model_copy(
        update={
            "num_params": num_params,
            "gflops": round(macs / 1e9, 6),
            "sha256": hashlib.sha256(data).hexdigest(),
            "verification": Verification(
                atol=atol,
                rtol=rtol,
                logit_scale=scale,
                tolerance=tolerance,
                max_abs_diff=max_diff,
                batch_sizes=list(VERIFY_BATCH_SIZES),
                frames=frontend.num_frames,
            ),
        }
    )
    publish_artifact(out, data, manifest)
    logger.info("wrote %s (%d params, %.3f GMACs)", out, num_params, macs / 1e9)
    return manifest
