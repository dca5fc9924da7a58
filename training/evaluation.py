"""Multi-view evaluation: the same loop for a torch model and for an exported ONNX artifact.

Each clip gets the audio preset's evenly spaced test views; the softmax of every view is averaged
into the clip's prediction (the paper's protocol), then ``arinext.training.metrics`` scores them.
The model behind the loop is a *scorer* (log-mel views in, logits per head out), so an artifact's
test metrics are measured through ONNX Runtime exactly as the service would run it. Under torchrun
each process scores a disjoint slice of the clips and the results are gathered, without the
duplicated samples a DistributedSampler would add.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from arinext.model.backends import open_session
from arinext.model.manifest import MODEL_FILE, Manifest, verify_artifact
from arinext.model.scores import softmax
from arinext.training.config import ConfigError
from arinext.training.datasets.base import ClipDataset, collate_eval
from arinext.training.distributed import Context, all_gather_objects
from arinext.training.metrics import evaluation_metrics

__all__ = [
    "Scorer",
    "evaluate",
    "onnx_scorer",
    "predict",
    "torch_scorer",
]

logger = logging.getLogger(__name__)

# A batch of views (N, 1, T, F) -> logits per head (N, classes), as numpy.
Scorer = Callable[[torch.Tensor], dict[str, np.ndarray]]


def torch_scorer(
    model: nn.Module, device: torch.device, amp_dtype: torch.dtype | None = None
) -> Scorer:
    """Scorer of a torch model (put in eval mode by the caller)."""

    def score(inputs: torch.Tensor) -> dict[str, np.ndarray]:
        autocast = (
            torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
        )
        with torch.no_grad(), autocast:
            outputs = model(inputs.to(device, non_blocking=True))
        return {head: out.float().cpu().numpy() for head, out in outputs.items()}

    return score


def _label_permutation(
    artifact_labels: Sequence[str], dataset_labels: Sequence[str], head: str
) -> np.ndarray:
    """Column order that puts the artifact's outputs in the dataset's class order."""
    position = {name: i for i, name in enumerate(artifact_labels)}
    if set(position) != set(dataset_labels):
        missing = sorted(set(dataset_labels) - set(position))[:5]
        raise ConfigError(
            f"head {head!r}: the artifact's labels are not the dataset's classes "
            f"(e.g. missing {missing}); evaluate it on the dataset it was trained for"
        )
    return np.array([position[name] for name in dataset_labels])


def onnx_scorer(
    artifact_dir: Path | str,
    dataset_heads: Mapping[str, Sequence[str]],
    threads: int = 0,
    *,
    backend: str = "onnxruntime",
    precision: str = "auto",
) -> tuple[Scorer, Manifest]:
    """Scorer running an artifact's ``model.onnx`` on ONNX Runtime (or ``backend``, with
    OpenVINO's ``precision``), as the service does.

    Artifact heads are matched to dataset heads by name (or one-to-one when both have a single
    head) and their columns reordered by label name, so an artifact whose outputs are in another
    class order is still scored correctly.
    """
    manifest = verify_artifact(artifact_dir)
    specs = {h.name: h for h in manifest.heads}
    if len(specs) == 1 and len(dataset_heads) == 1:
        pairs = {next(iter(dataset_heads)): next(iter(specs.values()))}
    else:
        missing = sorted(set(dataset_heads) - set(specs))
        if missing:
            raise ConfigError(f"the artifact has no head(s) {missing}; it has {sorted(specs)}")
        pairs = {head: specs[head] for head in dataset_heads}
    perms = {
        head: _label_permutation(spec.labels, dataset_heads[head], head)
        for head, spec in pairs.items()
    }
    session = open_session(
        Path(artifact_dir) / MODEL_FILE, backend=backend, precision=precision, threads=threads
    )
    outputs = [spec.output for spec in pairs.values()]

    def score(inputs: torch.Tensor) -> dict[str, np.ndarray]:
        results = session.run(outputs, {manifest.input: inputs.numpy().astype(np.float32)})
        return {
            head: np.asarray(result)[:, perms[head]]
            for head, result in zip(pairs, results, strict=True)
        }

    return score, manifest


def predict(
    scorer: Scorer,
    dataset: ClipDataset,
    ctx: Context,
    *,
    batch_size: int,
    num_workers: int,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-clip class probabilities (view-averaged softmax) and labels, per head, on every rank."""
    shard = list(range(ctx.rank, len(dataset), ctx.world_size))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=shard,
        num_workers=num_workers,
        collate_fn=collate_eval,
        pin_memory=ctx.device.type == "cuda",
    )
    heads = list(dataset.heads)
    probs: dict[str, list[np.ndarray]] = {h: [] for h in heads}
    labels, indices = [], []
    bar = tqdm(
        loader,
        desc=f"eval {dataset.index.dataset}/{dataset.index.split}",
        disable=not (progress and ctx.is_main),
        leave=False,
    )
    for batch in bar:
        logits = scorer(batch.inputs)
        offsets = np.r_[0, np.cumsum(batch.views.numpy())[:-1]]
        counts = batch.views.numpy()[:, None]
        for head in heads:
            # Softmax of every view, then the views' mean, as the reference does.
            probs[head].append(np.add.reduceat(softmax(logits[head]), offsets, axis=0) / counts)
        labels.append(batch.labels.numpy())
        indices.append(batch.indices.numpy())
    local = (
        np.concatenate(indices) if indices else np.zeros(0, np.int64),
        {h: np.concatenate(p) if p else None for h, p in probs.items()},
        np.concatenate(labels) if labels else None,
    )
    order_parts, label_parts = [], []
    prob_parts: dict[str, list[np.ndarray]] = {h: [] for h in heads}
    for idx, prob, lab in all_gather_objects(local):
        if len(idx) == 0:
            continue
        order_parts.append(idx)
        label_parts.append(lab)
        for h in heads:
            prob_parts[h].append(prob[h])
    order = np.argsort(np.concatenate(order_parts))
    all_labels = np.concatenate(label_parts)[order]
    return (
        {h: np.concatenate(prob_parts[h])[order] for h in heads},
        {h: all_labels[:, i] for i, h in enumerate(heads)},
    )


def evaluate(
    scorer: Scorer,
    dataset: ClipDataset,
    ctx: Context,
    *,
    batch_size: int,
    num_workers: int,
    progress: bool = True,
) -> dict[str, float | int]:
    """Metrics of ``scorer`` on ``dataset`` (identical on every rank)."""
    probs, labels = predict(
        scorer, dataset, ctx, batch_size=batch_size, num_workers=num_workers, progress=progress
    )
    return evaluation_metrics(probs, labels, dataset.index.subsets)
