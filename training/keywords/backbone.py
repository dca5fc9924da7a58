"""The keyword run's backbone: the shipped default model, or another speech artifact.

ONNX Runtime runs the backbone's graph up to the tensor the head is trained on (a stage's feature
map, or the input of the network's last stage when that stage is tuned too), once per view;
PyTorch rebuilds the same network from the graph's weights for the export.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from arinext.model.manifest import INPUT_NAME
from arinext.training.keywords.recipe import ProgressCallback

if TYPE_CHECKING:
    from arinext.model.manifest import Manifest

__all__ = ["BATCH", "Backbone", "load_backbone"]

BATCH = 64

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backbone:
    """A verified fp32 speech artifact whose network a keyword run builds on: the shipped default
    model's fp32 export unless ``arinext train-keywords --backbone`` names another (one of the
    same recipe trained on other data, say)."""

    directory: Path

    @cached_property
    def _verified(self) -> tuple[Manifest, bytes]:
        """The manifest and the graph's bytes, read once and checked as the server checks them,
        and a graph a keyword head can be put on (its log-mel input, numbered stages)."""
        import onnx

        from arinext.model.manifest import ArtifactError, read_verified_model

        manifest, graph = read_verified_model(self.directory)
        if manifest.precision != "fp32":
            raise ArtifactError(
                f"{self.directory}: a {manifest.precision} artifact cannot be a backbone for "
                f"keywords (a head is fine-tuned on its fp32 weights): give the fp32 artifact it "
                f"was quantised from"
            )
        nodes = onnx.load_from_string(graph).graph
        # Exports list no weights among the inputs (keep_initializers_as_inputs is off).
        if [i.name for i in nodes.input] != [INPUT_NAME] or not any(
            "/stages.0/" in node.name for node in nodes.node
        ):
            raise ArtifactError(
                f"{self.directory}: not a backbone for keywords (an exported network with a "
                f"{INPUT_NAME!r} input and numbered stages, as the default model)"
            )
        return manifest, graph

    @property
    def manifest(self) -> Manifest:
        """The verified manifest: the first use checks the artifact."""
        return self._verified[0]

    def voice_seed(self) -> int:
        """The seed the backbone's espeak-ng voices were split with (``make default-model``'s,
        recorded in its manifest; 0, the recipe's default, when the manifest does not say)."""
        seed = (self.manifest.extra or {}).get("default_model", {}).get("seed")
        if seed is None:
            log.warning(
                "%s does not record the seed its voices were split with (make default-model "
                "does); assuming 0: the run's held-out voices may be ones the backbone heard",
                self.directory,
            )
            return 0
        return int(seed)

    def _graph(self) -> Any:
        """A fresh copy of the verified graph (callers may change it)."""
        import onnx

        return onnx.load_from_string(self._verified[1])

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
            out.append(session.run([output], {INPUT_NAME: batch})[0])
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


def load_backbone(directory: Path | str | None = None) -> Backbone:
    """The backbone in ``directory``, or the shipped default model (verified on first use)."""
    if directory is None:
        from arinext.service.settings import EMBEDDED_FP32_MODEL_DIR

        directory = EMBEDDED_FP32_MODEL_DIR
    return _backbone(Path(directory).resolve())


@cache
def _backbone(directory: Path) -> Backbone:
    """One per resolved directory: its graph is verified and parsed once a process."""
    return Backbone(directory)
