"""The keyword head, the network the artifact holds, and their training on cached features.

Two heads read a backbone stage's feature map ``[N, C, T', F']`` (by default the third stage's,
whose time steps are 16 frames, 0.32 s: twice as fine as the last stage's):

- ``linear``: global average pooling then a linear layer (the default model's own head form);
- ``temporal``: average over frequency only, a small convolution over time (each step sees its
  neighbours, so "lights" then "on" differs from "lights" then "off" even where the pooled
  features blur them), max and mean over time, with the plain average beside them, then a
  linear layer.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from arinext.training.keywords.backbone import BATCH
from arinext.training.keywords.recipe import HeadKind, KeywordRecipe, ProgressCallback

__all__ = ["KeywordHead", "KeywordNet", "fit"]

log = logging.getLogger(__name__)


class KeywordHead(nn.Module):
    """Logits ``[N, classes]`` from a feature map ``[N, channels, T', F']``."""

    def __init__(
        self, kind: HeadKind, channels: int, classes: int, hidden: int, dropout: float
    ) -> None:
        super().__init__()
        self.kind = kind
        self.dropout = nn.Dropout(dropout)
        if kind == "temporal":
            self.conv = nn.Conv1d(channels, hidden, kernel_size=3, padding=1)
            self.linear = nn.Linear(2 * hidden + channels, classes)
        else:
            self.linear = nn.Linear(channels, classes)
        nn.init.normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "linear":
            return self.linear(self.dropout(x.mean(dim=(2, 3))))
        steps = x.mean(dim=3)  # [N, C, T']
        h = torch.relu(self.conv(steps))
        pooled = torch.cat([h.amax(dim=2), h.mean(dim=2), steps.mean(dim=2)], dim=1)
        return self.linear(self.dropout(pooled))


class KeywordNet(nn.Module):
    """The artifact's network: the backbone's stem and first ``stages`` stages, then the head.

    ``forward`` maps log-mel windows ``[N, 1, frames, mels]`` to ``{head: logits}``, like every
    network :func:`arinext.model.export.export_artifact` exports.
    """

    def __init__(self, backbone: Any, stages: int, head: KeywordHead, name: str) -> None:
        super().__init__()
        self.stem = backbone.stem
        self.stages = backbone.stages[:stages]
        self.head = head
        self.head_names = [name]
        self.architecture_params = dict(backbone.architecture_params)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {self.head_names[0]: self.head(self.stages(self.stem(x)))}


def fit(
    net: KeywordNet,
    features: np.ndarray,
    labels: np.ndarray,
    recipe: KeywordRecipe,
    progress: ProgressCallback,
) -> None:
    """Train the head (and the network's last stage, when tuned) on cached features, in place.

    ``features`` are the head's input (head only) or the last stage's input.
    """
    torch.manual_seed(recipe.seed)
    head = net.head
    stage = net.stages[-1] if recipe.tune == "last-stage" else None

    def logits(x: Tensor) -> Tensor:
        return head(stage(x) if stage is not None else x)

    groups: list[dict[str, Any]] = [{"params": head.parameters(), "lr": recipe.lr}]
    if stage is not None:
        groups.append({"params": stage.parameters(), "lr": recipe.stage_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    classes = head.linear.out_features
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    weights = torch.tensor(counts.sum() / np.maximum(counts, 1) / classes, dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=recipe.label_smoothing)
    x_all, y_all = torch.from_numpy(features), torch.from_numpy(labels)
    steps = recipe.epochs * -(-len(labels) // BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in groups], total_steps=steps, pct_start=0.1
    )
    generator = torch.Generator().manual_seed(recipe.seed)
    net.train()
    done = 0
    progress("training", 0, steps)
    for _ in range(recipe.epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), BATCH):
            batch = order[start : start + BATCH]
            loss = loss_fn(logits(x_all[batch]), y_all[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            done += 1
            progress("training", done, steps)
    net.eval()
    log.info("trained %s for %d steps; last batch loss %.3f", recipe.tune, steps, loss.item())
