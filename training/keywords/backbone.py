"""The keyword run's backbone: the shipped default model, or another speech artifact.

ONNX Runtime runs the backbone's graph up to the tensor the head is trained on (a stage's feature
map, or the input of the network's last stage when that stage is tuned too), once per view;
PyTorch rebuilds the same network from the graph's weights for the export.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import numpy as np

from arinext.training.keywords.recipe import ProgressCallback

__all__ = ["BATCH", "Backbone", "load_backbone"]

BATCH = 64


@dataclass(frozen=True)
class Backbone:
    """A verified speech artifact whose network a keyword run builds on: the shipped default
    model unless ``arinext train-keywords --backbone`` names another (one of the same recipe
    trained on other data, say)."""

    directory: Path

    @cached_property
    def manifest(self) -> Any:
        from arinext.model.manifest import verify_artifact

        return verify_artifact(self.directory)

    def voice_seed(self) -> int:
        """The seed the backbone's espeak-ng voices were split with (``make default-model``'s,
        recorded in its manifest; 0, the recipe's default, when the manifest does not say)."""
        extra = self.manifest.extra or {}
        return int(extra.get("default_model", {}).get("seed", 0))

    def _graph(self) -> Any:
        import onnx

        return onnx.load(self.directory / "model.onnx")

    def stage_input(self, index: int) -> str:
        """The tensor stage ``index`` reads ``[N, C, T', F']``; past the last stage, the last
        stage's output (the global pooling's input)."""
        for node in self._graph().graph.node:
            if f"/stages.{index}/" in node.name or node.op_type == "GlobalAveragePool":
                return str(node.input[0])
        raise RuntimeError(f"the backbone graph has no stage {index}")

    def _session(self, output: str) -> Any:
        """ONNX Runtime on the backbone's graph, answering the intermediate tensor ``output``."""
        import onnx
        import onnxruntime as ort

        graph = self._graph()
        del graph.graph.output[:]
        graph.graph.output.append(onnx.ValueInfoProto(name=output))
        options = ort.SessionOptions()
        options.intra_op_num_threads = len(os.sched_getaffinity(0))  # the CPUs it may use
        return ort.InferenceSession(
            graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    def features(
        self, views: np.ndarray, output: str, progress: ProgressCallback, stage: str
    ) -> np.ndarray:
        """The backbone's tensor ``output`` for log-mel ``views`` ``[N, frames, mels]``."""
        session = self._session(output)
        out = []
        progress(stage, 0, len(views))
        for start in range(0, len(views), BATCH):
            batch = views[start : start + BATCH, None]
            out.append(session.run([output], {"logmel": batch})[0])
            progress(stage, min(start + BATCH, len(views)), len(views))
        return np.concatenate(out)

    def network(self) -> Any:
        """The backbone in PyTorch (its plain conv form, its own heads too), every weight read
        from its graph."""
        import torch
        from onnx import numpy_helper

        from arinext.model.registry import create_model
        from arinext.model.reparam import reparameterize_model

        manifest = self.manifest
        heads = {head.name: len(head.labels) for head in manifest.heads}
        net = create_model(manifest.architecture, heads, **manifest.architecture_params)
        net = reparameterize_model(net, manifest.reparameterized, inplace=True)
        state = {
            init.name.removeprefix("model."): torch.from_numpy(numpy_helper.to_array(init).copy())
            for init in self._graph().graph.initializer
        }
        net.load_state_dict(state)
        return net


@cache
def load_backbone(directory: Path | None = None) -> Backbone:
    """The backbone in ``directory``, or the shipped default model (verified on first use)."""
    if directory is None:
        from arinext.service.settings import EMBEDDED_MODEL_DIR

        directory = EMBEDDED_MODEL_DIR
    return Backbone(Path(directory).resolve())
