"""A small artifact whose right answers are known: class k is "most energy in mel band k".

Built with ``onnx.helper`` (no torch): a 1x1 convolution and ReLU (a quantisable conv, as in the
real network), the mean over time and channels, and a linear head that sums each class's band of
mel bins. A tone in band k wins class k by a wide margin, so int8 must agree with fp32; but with a
large ``offset`` added before the ReLU every activation sits far from zero, the uint8 step (which
must cover 0..max) grows larger than the bands' differences, and int8 cannot keep the order.
``band_tone`` makes a clip that belongs to class k.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from arinext.model.audio_config import AudioConfig
from arinext.model.frontend import mel_filterbank
from arinext.model.manifest import (
    INPUT_NAME,
    MODEL_FILE,
    HeadSpec,
    Manifest,
    Provenance,
    sha256_file,
    write_manifest,
)

__all__ = ["CFG", "band_tone", "make_band_artifact"]

# The default model's front-end, 100 x 128 log-mels of 1 s at 16 kHz.
CFG = AudioConfig(
    name="speech_commands",
    sample_rate=16000,
    window_ms=25.0,
    hop_ms=10.0,
    clip_seconds=1.0,
    num_frames=100,
    n_mels=128,
    n_fft=2048,
)


def _bands(cfg: AudioConfig, classes: int) -> list[range]:
    edges = np.linspace(8, cfg.n_mels - 8, classes + 1).astype(int)
    return [range(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def band_tone(cfg: AudioConfig, classes: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """One clip of class ``k``: a tone at a random mel bin inside band ``k``, over faint noise."""
    band = _bands(cfg, classes)[k]
    fb = mel_filterbank(
        cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax or cfg.sample_rate / 2
    )
    mel = int(rng.integers(band.start + 1, band.stop - 1))
    freq = float(np.argmax(fb[mel])) * cfg.sample_rate / cfg.n_fft
    t = np.arange(cfg.clip_samples) / cfg.sample_rate
    tone = np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)) * rng.uniform(0.05, 0.5)
    return (tone + rng.standard_normal(len(t)) * 1e-3).astype(np.float32)


def make_band_artifact(
    directory: Path, *, classes: int = 6, offset: float = 14.0, name: str = "band-test"
) -> Manifest:
    """Write the band classifier as an artifact into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    channels = 4
    head = np.zeros((CFG.n_mels, classes), dtype=np.float32)
    for k, band in enumerate(_bands(CFG, classes)):
        head[list(band), k] = 10.0 / len(band)
    inits = [
        numpy_helper.from_array(
            np.linspace(0.5, 2, channels, dtype=np.float32).reshape(channels, 1, 1, 1), "conv.w"
        ),
        numpy_helper.from_array(np.full(channels, offset, dtype=np.float32), "conv.b"),
        numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
        numpy_helper.from_array(head, "head.w"),
        numpy_helper.from_array(np.zeros(classes, dtype=np.float32), "head.b"),
    ]
    output = "logits_bands"
    nodes = [
        helper.make_node("Conv", [INPUT_NAME, "conv.w", "conv.b"], ["h"]),
        helper.make_node("Relu", ["h"], ["a"]),
        helper.make_node("ReduceMean", ["a", "axes"], ["pooled"], keepdims=0),
        helper.make_node("Gemm", ["pooled", "head.w", "head.b"], [output]),
    ]
    graph = helper.make_graph(
        nodes,
        "bands",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 1, "frames", 128])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, directory / MODEL_FILE)
    manifest = Manifest(
        name=name,
        architecture="band-test",
        reparameterized="none",
        frontend=CFG,
        heads=[HeadSpec(name="bands", output=output, labels=[f"band{k}" for k in range(classes)])],
        num_params=int(head.size + classes + 2 * channels),
        gflops=0.0,
        sha256=sha256_file(directory / MODEL_FILE),
        provenance=Provenance(source="tests/model/band_artifact.py", command="constructed"),
        metrics={"test": {"top1": 1.0}},
    )
    write_manifest(directory, manifest)
    return manifest
