"""Run directories and checkpoints: what a run writes, and how models come back out of it.

A run directory holds ``config.yaml`` (the resolved config), ``last.pt`` (written every epoch,
everything ``--resume`` needs), ``best.pt`` (the epoch with the best validation metric),
``metrics.jsonl``/``metrics.csv`` and ``curves.png``. Checkpoints contain only tensors and plain
Python values, so they load with ``torch.load(weights_only=True)``: opening a checkpoint must
never be able to run code.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from arinext.model.registry import create_model
from arinext.training.config import TrainConfig, UserError, load_yaml

__all__ = [
    "BEST",
    "CONFIG",
    "LAST",
    "CheckpointError",
    "build_model",
    "initial_model",
    "load_checkpoint",
    "load_run",
    "read_run_config",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

CONFIG = "config.yaml"
LAST = "last.pt"
BEST = "best.pt"
CHECKPOINT_FORMAT = 1


class CheckpointError(UserError):
    """A run directory or checkpoint that cannot be used as asked."""


def build_model(cfg: TrainConfig, heads: dict[str, int]) -> nn.Module:
    """The run's network (architecture + overrides) with freshly initialised weights."""
    return create_model(cfg.architecture, heads, **cfg.model)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a truncated checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **payload}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """One of our checkpoints (weights_only: tensors and plain values only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an arinext training checkpoint")
    return payload


def read_run_config(run_dir: Path | str) -> TrainConfig:
    """The resolved config a run saved."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: no {CONFIG} (is it a training run directory?)")
    return TrainConfig.from_dict(load_yaml(path))


def _run_checkpoint(run_dir: Path, which: str) -> Path:
    names = {"best": BEST, "last": LAST}
    if which not in names:
        raise CheckpointError(f"checkpoint must be 'best' or 'last', got {which!r}")
    path = run_dir / names[which]
    if which == "best" and not path.is_file() and (run_dir / LAST).is_file():
        logger.warning("%s: no %s yet, using %s", run_dir, BEST, LAST)
        path = run_dir / LAST
    return path


def load_run(
    run_dir: Path | str, which: str = "best"
) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """A run's model (eval mode, on CPU) with the weights of its best or last checkpoint."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    payload = load_checkpoint(_run_checkpoint(run_dir, which))
    heads = {head: len(names) for head, names in payload["labels"].items()}
    model = build_model(cfg, heads)
    model.load_state_dict(payload["model"])
    return model.eval(), cfg, payload


def _is_authors_checkpoint(path: Path) -> bool:
    if path.suffix == ".pyth":
        return True
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return isinstance(payload, dict) and "model_state" in payload


def initial_model(cfg: TrainConfig, heads: dict[str, int]) -> tuple[nn.Module, dict[str, Any], str]:
    """The network a run starts from, plus config updates that describe it.

    From scratch: the configured architecture. Otherwise ``cfg.init`` names a run directory (its
    best checkpoint), one of our ``.pt`` checkpoints, or an authors' ``.pyth`` checkpoint; the
    network is whatever that holds (its architecture wins over the config's, and the returned
    updates record it so the run can be rebuilt later), with new heads for this task.
    """
    if cfg.from_scratch:
        return build_model(cfg, heads), {}, "random initialisation"
    source = Path(cfg.init)
    if source.is_dir():
        if (source / "manifest.json").is_file() and not (source / CONFIG).is_file():
            raise CheckpointError(
                f"{source} is an exported artifact (ONNX): fine-tune from the run directory or "
                "checkpoint it was exported from"
            )
        model, source_cfg, _ = load_run(source, "best")
        updates = {"architecture": source_cfg.architecture, "model": dict(source_cfg.model)}
    elif source.is_file() and _is_authors_checkpoint(source):
        from arinext.model.checkpoint import load_authors_checkpoint

        model, info = load_authors_checkpoint(source)
        if info.merged:
            raise CheckpointError(
                f"{source} holds merged (inference-form) weights, which a run cannot rebuild; "
                "fine-tune from the train-form checkpoint"
            )
        updates = {"architecture": info.variant, "model": dict(info.overrides)}
    elif source.is_file():
        payload = load_checkpoint(source)
        source_cfg = TrainConfig.from_dict(payload["config"])
        source_heads = {h: len(names) for h, names in payload["labels"].items()}
        model = build_model(source_cfg, source_heads)
        model.load_state_dict(payload["model"])
        updates = {"architecture": source_cfg.architecture, "model": dict(source_cfg.model)}
    else:
        raise CheckpointError(f"init {cfg.init!r}: no such run directory or checkpoint file")
    if updates["architecture"] != cfg.architecture or updates["model"] != cfg.model:
        logger.info(
            "architecture from %s: %s %s", source, updates["architecture"], updates["model"]
        )
    cast(Any, model).reset_heads(heads)  # every architecture of arinext.model.registry has it
    return model.train(), updates, str(source)
