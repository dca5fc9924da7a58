"""The shipped default model as the keyword run's backbone.

ONNX Runtime runs the shipped graph up to the tensor the head is trained on (a stage's feature
map, or the input of the network's last stage when that stage is tuned too), once per view;
PyTorch rebuilds the same network from the graph's weights for the export.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from arinext.training.keywords.recipe import ProgressCallback

__all__ = [
    "BATCH",
    "backbone_manifest",
    "backbone_network",
    "backbone_voice_seed",
    "features",
    "stage_input",
]

BATCH = 64


def _backbone_dir() -> Path:
    """The shipped default model, whose backbone every keyword artifact starts from."""
    from arinext.service.settings import EMBEDDED_MODEL_DIR

    return EMBEDDED_MODEL_DIR


@cache
def backbone_manifest() -> Any:
    from arinext.model.manifest import verify_artifact

    return verify_artifact(_backbone_dir())


def backbone_voice_seed() -> int:
    """The seed the backbone's espeak-ng voices were split with (``make default-model``'s,
    recorded in its manifest; 0, the recipe's default, when the manifest does not say)."""
    extra = backbone_manifest().extra or {}
    return int(extra.get("default_model", {}).get("seed", 0))


def _graph() -> Any:
    import onnx

    return onnx.load(_backbone_dir() / "model.onnx")


def stage_input(index: int) -> str:
    """The tensor stage ``index`` reads ``[N, C, T', F']``; past the last stage, the last
    stage's output (the global pooling's input)."""
    for node in _graph().graph.node:
        if f"/stages.{index}/" in node.name or node.op_type == "GlobalAveragePool":
            return str(node.input[0])
    raise RuntimeError(f"the backbone graph has no stage {index}")


def _session(output: str) -> Any:
    """ONNX Runtime on the shipped graph, answering the intermediate tensor ``output``."""
    import onnx
    import onnxruntime as ort

    graph = _graph()
    del graph.graph.output[:]
    graph.graph.output.append(onnx.ValueInfoProto(name=output))
    options = ort.SessionOptions()
    options.intra_op_num_threads = len(os.sched_getaffinity(0))  # the CPUs this process may use
    return ort.InferenceSession(
        graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def features(views: np.ndarray, output: str, progress: ProgressCallback, stage: str) -> np.ndarray:
    """The backbone's tensor ``output`` for log-mel ``views`` ``[N, frames, mels]``."""
    session = _session(output)
    out = []
    progress(stage, 0, len(views))
    for start in range(0, len(views), BATCH):
        batch = views[start : start + BATCH, None]
        out.append(session.run([output], {"logmel": batch})[0])
        progress(stage, min(start + BATCH, len(views)), len(views))
    return np.concatenate(out)


def backbone_network() -> Any:
    """The default model in PyTorch (its plain conv form, its own heads too), every weight read
    from the shipped graph."""
    import torch
    from onnx import numpy_helper

    from arinext.model.registry import create_model
    from arinext.model.reparam import reparameterize_model

    manifest = backbone_manifest()
    heads = {head.name: len(head.labels) for head in manifest.heads}
    net = create_model(manifest.architecture, heads, **manifest.architecture_params)
    net = reparameterize_model(net, manifest.reparameterized, inplace=True)
    state = {
        init.name.removeprefix("model."): torch.from_numpy(numpy_helper.to_array(init).copy())
        for init in _graph().graph.initializer
    }
    net.load_state_dict(state)
    return net
