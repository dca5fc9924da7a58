"""Tiny random-weight artifacts for service tests, built directly as ONNX graphs.

Built with ``onnx.helper`` rather than torch so the fast tests neither import torch nor wait for
an exporter: a conv + ReLU stack, global average pooling and one linear layer per head, with the
artifact contract of the real exporter (input ``logmel`` [batch, 1, frames, mels], outputs
``logits_<head>``, dynamic batch). ``slow_layers`` adds full-resolution convs to make a model that
takes long enough per window to exercise queueing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from arinext.model.audio_config import AudioConfig
from arinext.model.manifest import (
    INPUT_NAME,
    MODEL_FILE,
    HeadSpec,
    Manifest,
    Provenance,
    sha256_file,
    write_manifest,
)

__all__ = ["make_tiny_artifact", "output_name"]


def output_name(head: str) -> str:
    """The ONNX output holding ``head``'s logits (the real exporter's convention)."""
    return f"logits_{head}"


def _tiny_graph(
    heads: Mapping[str, int], n_mels: int, *, channels: int, slow_layers: int, seed: int
) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = []
    nodes = []

    def weight(name: str, shape: Sequence[int], scale: float) -> str:
        values = (rng.standard_normal(shape) * scale).astype(np.float32)
        inits.append(numpy_helper.from_array(values, name))
        return name

    nodes.append(
        helper.make_node(
            "Conv",
            [
                INPUT_NAME,
                weight("conv0.w", (channels, 1, 3, 3), 0.5),
                weight("conv0.b", (channels,), 0.5),
            ],
            ["h0"],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
        )
    )
    nodes.append(helper.make_node("Relu", ["h0"], ["a0"]))
    last = "a0"
    for i in range(1, slow_layers + 1):
        w = weight(f"conv{i}.w", (channels, channels, 3, 3), 1.0 / (3 * channels**0.5))
        nodes.append(helper.make_node("Conv", [last, w], [f"h{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"h{i}"], [f"a{i}"]))
        last = f"a{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [last], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    outputs = []
    for head, classes in heads.items():
        w = weight(f"{head}.w", (channels, classes), 1.0)
        b = weight(f"{head}.b", (classes,), 0.1)
        nodes.append(helper.make_node("Gemm", ["features", w, b], [output_name(head)]))
        outputs.append(
            helper.make_tensor_value_info(output_name(head), TensorProto.FLOAT, ["batch", classes])
        )
    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, ["batch", 1, "frames", n_mels]
            )
        ],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def make_tiny_artifact(
    directory: Path,
    *,
    name: str,
    frontend: AudioConfig,
    labels: Mapping[str, Sequence[str]],
    seed: int = 0,
    channels: int = 8,
    slow_layers: int = 0,
) -> Manifest:
    """Write ``model.onnx`` + ``manifest.json`` for a random tiny network into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    heads = {head: len(names) for head, names in labels.items()}
    model = _tiny_graph(
        heads, frontend.n_mels, channels=channels, slow_layers=slow_layers, seed=seed
    )
    path = directory / MODEL_FILE
    onnx.save(model, path)
    num_params = int(sum(np.prod(t.dims) for t in model.graph.initializer))
    manifest = Manifest(
        name=name,
        architecture="tiny-test-cnn",
        reparameterized="none",
        frontend=frontend,
        heads=[
            HeadSpec(name=head, output=output_name(head), labels=list(names))
            for head, names in labels.items()
        ],
        num_params=num_params,
        gflops=0.0,
        sha256=sha256_file(path),
        provenance=Provenance(source="tests/service/artifacts.py", command="random weights"),
        metrics={"note": "random weights"},
    )
    write_manifest(directory, manifest)
    return manifest
