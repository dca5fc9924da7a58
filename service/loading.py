"""Loaded models: each artifact verified (manifest schema and sha256) before its ONNX Runtime or
OpenVINO session (``arinext.model.backends``) is created, and run once on an all-zero batch, so the
first real request does not pay for graph optimisation and a broken artifact is caught at startup,
not at traffic; and the registry of the heads they serve.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arinext.model.backends import BackendError, Session, open_session
from arinext.model.manifest import ArtifactError, HeadSpec, Manifest, read_verified_model

__all__ = ["LoadedModel", "ModelRegistry", "load_model", "load_models"]

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A verified artifact and its inference session."""

    directory: Path
    manifest: Manifest
    session: Session

    @property
    def name(self) -> str:
        """The model's name from its manifest."""
        return self.manifest.name

    def run(self, views: np.ndarray) -> dict[str, np.ndarray]:
        """Logits per head name for a ``(batch, 1, frames, mels)`` float32 batch."""
        outputs = [head.output for head in self.manifest.heads]
        values = self.session.run(outputs, {self.manifest.input: views})
        return {head.name: v for head, v in zip(self.manifest.heads, values, strict=True)}


def load_model(
    directory: Path,
    *,
    intra_op_threads: int = 0,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    backend: str = "onnxruntime",
    precision: str = "auto",
) -> LoadedModel:
    """Verify, open and warm up one artifact; ``ArtifactError`` says why it cannot be served.

    ``providers`` are ONNX Runtime execution providers in order of preference; one this build
    lacks (e.g. CUDA without onnxruntime-gpu) is refused rather than silently replaced by CPU.
    ``backend`` and ``precision`` pick the runtime (``arinext.model.backends``); a backend that is
    not installed or cannot load the graph is refused the same way.
    """
    manifest, graph = read_verified_model(directory)
    try:
        session = open_session(
            graph,
            backend=backend,
            precision=precision,
            threads=intra_op_threads,
            providers=providers,
        )
    except BackendError as exc:
        raise ArtifactError(f"{directory}: {exc}") from exc
    inputs = set(session.input_names)
    outputs = set(session.output_names)
    if manifest.input not in inputs:
        raise ArtifactError(f"{directory}: graph has no input {manifest.input!r} ({inputs})")
    missing = [h.output for h in manifest.heads if h.output not in outputs]
    if missing:
        raise ArtifactError(f"{directory}: graph lacks the outputs {missing} named in the manifest")
    model = LoadedModel(Path(directory), manifest, session)
    cfg = manifest.frontend
    try:
        logits = model.run(np.zeros((1, 1, cfg.num_frames, cfg.n_mels), dtype=np.float32))
    except Exception as exc:
        raise ArtifactError(f"{directory}: warm-up inference failed: {exc}") from exc
    for head in manifest.heads:
        if logits[head.name].shape != (1, len(head.labels)):
            raise ArtifactError(
                f"{directory}: head {head.name!r} outputs shape {logits[head.name].shape}, "
                f"the manifest lists {len(head.labels)} labels"
            )
    return model


class ModelRegistry:
    """The served models and the heads they answer for (head names are unique)."""

    def __init__(self, models: Sequence[LoadedModel]) -> None:
        self.models: dict[str, LoadedModel] = {}
        self.heads: dict[str, tuple[LoadedModel, HeadSpec]] = {}
        for model in models:
            if model.name in self.models:
                raise ArtifactError(f"two artifacts are both named {model.name!r}")
            self.models[model.name] = model
            for head in model.manifest.heads:
                if head.name in self.heads:
                    other = self.heads[head.name][0].name
                    raise ArtifactError(
                        f"head {head.name!r} is served by both {other!r} and {model.name!r}"
                    )
                self.heads[head.name] = (model, head)


def load_models(
    directories: Iterable[Path],
    *,
    intra_op_threads: int,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    backend: str = "onnxruntime",
    precision: str = "auto",
) -> ModelRegistry:
    """Load every artifact; the first that fails aborts with ``ArtifactError``."""
    loaded = []
    for directory in directories:
        start = time.perf_counter()
        model = load_model(
            directory,
            intra_op_threads=intra_op_threads,
            providers=providers,
            backend=backend,
            precision=precision,
        )
        logger.info(
            "loaded %s from %s (%s, heads %s, sha256 %s) on %s in %.2f s",
            model.name,
            directory,
            model.manifest.precision,
            ", ".join(h.name for h in model.manifest.heads),
            model.manifest.sha256[:12],
            model.session.description,
            time.perf_counter() - start,
        )
        loaded.append(model)
    return ModelRegistry(loaded)
