"""The training loop: one code path for CPU, one GPU, and many GPUs or nodes under torchrun.

Per epoch: train with SGD or AdamW (cross-entropy summed over heads), step the learning-rate
schedule (per epoch for the paper's step decay, per optimiser step for warm-up + cosine),
optionally re-estimate BN statistics (precise BN), evaluate on the validation split with the
test-view protocol, append the metrics to the run's history and write ``last.pt`` (and
``best.pt`` when the validation metric improved). Only rank 0 writes files or shows progress.

Reproducibility: the shuffling order is a function of (seed, epoch), each clip's random view and
SpecAugment of (seed, epoch, clip), and the torch RNG (dropout) is saved per rank
in every checkpoint; so ``--resume`` continues exactly where the run stopped.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from arinext.training import history
from arinext.training.checkpoints import (
    BEST,
    CONFIG,
    LAST,
    build_model,
    initial_model,
    load_checkpoint,
    save_checkpoint,
)
from arinext.training.config import ConfigError, TrainConfig, apply_overrides, save_config
from arinext.training.datasets import ClipDataset, ClipIndex, read_split
from arinext.training.distributed import (
    Context,
    all_gather_objects,
    all_reduce_mean_,
    barrier,
    cleanup,
    setup,
)
from arinext.training.evaluation import evaluate, torch_scorer

__all__ = [
    "autocast_dtype",
    "build_optimizer",
    "build_scheduler",
    "freeze_batchnorm",
    "native_cpu_bf16",
    "precise_batchnorm",
    "set_train_mode",
    "train",
    "warmup_cosine",
]

logger = logging.getLogger(__name__)


def freeze_batchnorm(model: nn.Module) -> list[_BatchNorm]:
    """Freeze every BatchNorm outside ``model.stem``: no trained affine, no statistics updates.

    Fine-tuning a small dataset with VGG-Sound's BN statistics is what the paper does; the
    stem's BN stays trainable so the input scale of a new dataset can still adapt. The frozen
    modules are returned because ``model.train()`` would switch them back to batch statistics:
    :func:`set_train_mode` keeps them in eval mode.
    """
    stem = set(cast(nn.Module, model.stem).modules())
    frozen = [m for m in model.modules() if isinstance(m, _BatchNorm) and m not in stem]
    for module in frozen:
        module.eval()
        module.requires_grad_(False)
    return frozen


def set_train_mode(model: nn.Module, frozen: list[_BatchNorm]) -> None:
    """``model.train()`` except for the frozen BatchNorms."""
    model.train()
    for module in frozen:
        module.eval()


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD or AdamW over the trainable parameters; BN parameters get ``bn_weight_decay``."""
    bn_params = [
        p
        for m in model.modules()
        if isinstance(m, _BatchNorm)
        for p in m.parameters(recurse=False)
        if p.requires_grad
    ]
    bn_ids = {id(p) for p in bn_params}
    other = [p for p in model.parameters() if p.requires_grad and id(p) not in bn_ids]
    groups = [{"params": other, "weight_decay": cfg.weight_decay}]
    if bn_params:
        groups.append({"params": bn_params, "weight_decay": cfg.bn_weight_decay})
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """LR factor at optimiser step ``t``: linear from ~0 to 1 over ``warmup`` steps, then a half
    cosine from 1 to 0 at step ``total``.

    A closure rather than a callable object: ``LambdaLR`` saves an object's attributes in its
    state dict and would bring back the checkpoint's step counts on ``--resume``, whereas a
    resumed run's schedule must follow its own ``epochs``.
    """
    total = max(total, 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(total - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int = 1
) -> torch.optim.lr_scheduler.LRScheduler:
    """The ``schedule`` of ``cfg``: ``step`` is stepped once per epoch, ``cosine`` once per
    optimiser step (``steps_per_epoch`` of them per epoch)."""
    if cfg.schedule == "cosine":
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(warmup, cfg.epochs * steps_per_epoch)
        )
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.lr_milestones, cfg.lr_gamma)


def native_cpu_bf16() -> bool:
    """Whether this x86 CPU computes bfloat16 in hardware (AMX or AVX512-BF16); others emulate
    it. (Arm CPUs with bf16 instructions are not recognised: they train in float32.)"""
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Mixed-precision type: bf16 where the GPU supports it, else fp16; none on CPU.

    On CPU only an explicit ``bf16`` turns it on, and only where the CPU has bfloat16 in
    hardware: with AMX or AVX512-BF16 this network's training step runs faster; without them
    bf16 is emulated and slower than float32 (benchmarks/train_speed.py, docs/performance.md),
    so that run trains in float32 and says so, as fp16 on CPU does.
    """
    if device.type == "cpu" and amp == "bf16":
        if native_cpu_bf16():
            return torch.bfloat16
        logger.warning(
            "no AMX or AVX512-BF16 found on this CPU; without them bf16 is emulated and slower "
            "than float32: training in float32"
        )
        return None
    if device.type != "cuda" or amp == "none":
        if amp == "fp16":
            logger.warning("mixed precision %s needs a GPU; training in float32", amp)
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def precise_batchnorm(
    model: nn.Module,
    loader: DataLoader,
    num_batches: int,
    frozen: list[_BatchNorm],
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> None:
    """Replace running BN statistics by their average over ``num_batches`` training batches.

    The exponential moving average lags behind the weights; evaluating with the plain average
    over many batches of the final weights is what the authors do before each evaluation.
    ``model`` must be the bare module (a DDP wrapper would broadcast rank 0's buffers on every
    forward); statistics are averaged across processes afterwards.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m not in frozen]
    if not norms or num_batches <= 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    set_train_mode(model, frozen)
    with torch.no_grad(), _autocast(device, amp_dtype):
        for step, (inputs, _) in enumerate(loader):
            if step >= num_batches:
                break
            model(inputs.to(device, non_blocking=True))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
        if m.running_mean is not None and m.running_var is not None:  # tracked: reset above
            all_reduce_mean_(m.running_mean)
            all_reduce_mean_(m.running_var)


def _head_key(prefix: str, heads: list[str], head: str, metric: str) -> str:
    return f"{prefix}_{metric}" if len(heads) == 1 else f"{prefix}_{head}_{metric}"


def _train_epoch(
    net: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    heads: list[str],
    ctx: Context,
    amp_dtype: torch.dtype | None,
    desc: str,
    channels_last: bool = False,
    label_smoothing: float = 0.0,
    per_step: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> dict[str, float]:
    # Sums over samples: loss, count, then correct top-1 per head.
    totals = torch.zeros(2 + len(heads), dtype=torch.float64)
    bar = tqdm(loader, desc=desc, disable=not ctx.is_main, leave=False, dynamic_ncols=True)
    for inputs, labels in bar:
        inputs = inputs.to(ctx.device, non_blocking=True)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        labels = labels.to(ctx.device, non_blocking=True)
        with _autocast(ctx.device, amp_dtype):
            outputs = net(inputs)
        loss = torch.stack(
            [
                F.cross_entropy(
                    outputs[head].float(), labels[:, i], label_smoothing=label_smoothing
                )
                for i, head in enumerate(heads)
            ]
        ).sum()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if per_step is not None:
            per_step.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss is {value}; lower the learning rate")
        count = len(inputs)
        totals[0] += value * count
        totals[1] += count
        for i, head in enumerate(heads):
            totals[2 + i] += float((outputs[head].argmax(1) == labels[:, i]).sum())
        bar.set_postfix(loss=f"{value:.3f}")
    all_reduce_mean_(totals)  # ratios of means are ratios of sums
    seen = max(float(totals[1]), 1.0)
    stats = {"train_loss": float(totals[0]) / seen}
    for i, head in enumerate(heads):
        stats[_head_key("train", heads, head, "top1")] = float(totals[2 + i]) / seen
    return stats


def _rng_state(ctx: Context) -> dict[str, Any]:
    """Every rank's torch RNG state (dropout), gathered so each rank can get its own back."""
    local = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(ctx.device) if ctx.device.type == "cuda" else None,
    }
    return {"per_rank": all_gather_objects(local)}


def _restore_rng(state: dict[str, Any], ctx: Context, cfg: TrainConfig, epoch: int) -> None:
    ranks = state.get("per_rank", [])
    if len(ranks) != ctx.world_size:
        logger.warning(
            "checkpoint was written by %d process(es), resuming with %d: dropout RNG re-seeded",
            len(ranks),
            ctx.world_size,
        )
        torch.manual_seed(cfg.seed + 1000 * epoch + ctx.rank)
        return
    torch.set_rng_state(ranks[ctx.rank]["torch"])
    if ctx.device.type == "cuda" and ranks[ctx.rank]["cuda"] is not None:
        torch.cuda.set_rng_state(ranks[ctx.rank]["cuda"], ctx.device)


def _check_start(cfg: TrainConfig, run_dir: Path, resume: bool, ctx: Context) -> None:
    if not cfg.out:
        raise ConfigError("an output run directory is required (--out)")
    if not cfg.data_root:
        raise ConfigError("the dataset location is required (--data-root)")
    if resume and not (run_dir / LAST).is_file():
        raise ConfigError(f"--resume: {run_dir / LAST} does not exist")
    if not resume and (run_dir / LAST).is_file():
        raise ConfigError(f"{run_dir} already holds a run: pass --resume or choose another --out")
    if not cfg.init.strip():
        raise ConfigError(
            f"preset {cfg.preset!r} fine-tunes pre-trained weights: pass --init RUN_DIR_OR_CKPT "
            "(e.g. a VGG-Sound run or the authors' .pyth), or --set init=none to train from "
            "scratch"
        )
    if cfg.batch_size % ctx.world_size:
        raise ConfigError(
            f"batch_size {cfg.batch_size} (global) is not divisible by {ctx.world_size} processes"
        )


def _add_log_file(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def train(cfg: TrainConfig, *, resume: bool = False) -> Path:
    """Train (or, with ``resume``, continue) the run ``cfg.out``; returns the run directory."""
    ctx = setup(cfg.device)
    try:
        run_dir = _train(cfg, ctx, resume)
        barrier()  # leave together: the main process still writes the curves
        return run_dir
    finally:
        cleanup()


def _train(cfg: TrainConfig, ctx: Context, resume: bool) -> Path:
    run_dir = Path(cfg.out)
    _check_start(cfg, run_dir, resume, ctx)
    torch.manual_seed(cfg.seed + ctx.rank)
    train_index = read_split(cfg.dataset, cfg.data_root, cfg.train_split, cfg.data)
    val_index = read_split(cfg.dataset, cfg.data_root, cfg.val_split, cfg.data)
    heads = {head: len(names) for head, names in train_index.heads.items()}
    payload: dict[str, Any] | None = None
    if resume:
        payload = load_checkpoint(run_dir / LAST)
        model = build_model(cfg, heads)
        model.load_state_dict(payload["model"])
        source = str(run_dir / LAST)
    else:
        model, updates, source = initial_model(cfg, heads)
        cfg = apply_overrides(cfg, updates)
    logger.info(
        "%s on %s: %d train / %d %s clips, %s from %s, %d process(es) on %s",
        cfg.preset,
        cfg.dataset,
        len(train_index.clips),
        len(val_index.clips),
        cfg.val_split,
        cfg.architecture,
        source,
        ctx.world_size,
        ctx.device,
    )
    log_handler = None
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / CONFIG)
        log_handler = _add_log_file(run_dir)
    try:
        run = _Run(cfg, ctx, run_dir, model, train_index, val_index)
        if payload is not None:
            run.restore(payload)
        run.fit()
    finally:
        if log_handler is not None:
            logging.getLogger().removeHandler(log_handler)
            log_handler.close()
    return run_dir


class _Run:
    """The state of one training run between epochs: what a checkpoint saves and restores."""

    def __init__(
        self,
        cfg: TrainConfig,
        ctx: Context,
        run_dir: Path,
        model: nn.Module,
        train_index: ClipIndex,
        val_index: ClipIndex,
    ) -> None:
        self.cfg, self.ctx, self.run_dir = cfg, ctx, run_dir
        self.labels = train_index.heads
        self.heads = list(self.labels)
        self.frozen = freeze_batchnorm(model) if cfg.frozen_bn else []
        self.model = model.to(ctx.device)
        if cfg.channels_last:
            # Module.to takes memory_format; torch's stubs do not say so.
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.net: nn.Module = model
        if ctx.distributed:
            self.net = DistributedDataParallel(
                model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None
            )
        if cfg.compile:
            # Static shapes: a batch size compiles once (the full one, and an epoch's last),
            # where a dynamic graph would be compiled again and run slower.
            self.net = cast(
                nn.Module, torch.compile(self.net, dynamic=False, backend=cfg.compile_backend)
            )
        self.optimizer = build_optimizer(model, cfg)
        self.amp_dtype = autocast_dtype(cfg.amp, ctx.device)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=self.amp_dtype == torch.float16)
        self.start_epoch = 0
        self.best: dict[str, Any] = {"metric": cfg.best_metric, "value": None, "epoch": None}

        audio = cfg.audio_config()
        self.train_set = ClipDataset(
            train_index, audio, "train", augment=cfg.augment, seed=cfg.seed
        )
        self.val_set = ClipDataset(val_index, audio, "eval", seed=cfg.seed)
        if cfg.cache_audio:
            for dataset in (self.train_set, self.val_set):
                dataset.cache_audio(threads=max(1, cfg.num_workers), progress=ctx.is_main)
        self.sampler: DistributedSampler[int] = DistributedSampler(
            self.train_set,
            num_replicas=ctx.world_size,
            rank=ctx.rank,
            shuffle=True,
            seed=cfg.seed,
        )
        steps = math.ceil(len(self.sampler) / (cfg.batch_size // ctx.world_size))
        self.scheduler = build_scheduler(self.optimizer, cfg, steps)
        self.per_step = cfg.schedule == "cosine"

    def restore(self, payload: dict[str, Any]) -> None:
        """Continue from ``last.pt``: optimiser, schedule, scaler, epoch, best, RNG, history."""
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        self.start_epoch = int(payload["epoch"])
        self.best = dict(payload["best"])
        _restore_rng(payload["rng"], self.ctx, self.cfg, self.start_epoch)
        if self.ctx.is_main:
            history.truncate(self.run_dir, self.start_epoch)
        logger.info("resumed %s at epoch %d", self.run_dir, self.start_epoch)

    def loader(self, epoch: int) -> DataLoader:
        """The epoch's training batches (order and augmentation fixed by seed and epoch)."""
        self.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        return DataLoader(
            self.train_set,
            batch_size=self.cfg.batch_size // self.ctx.world_size,
            sampler=self.sampler,
            num_workers=self.cfg.num_workers,
            pin_memory=self.ctx.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.cfg.seed + epoch),
        )

    def validate(self, epoch: int) -> dict[str, Any]:
        """Validation metrics of the current weights (after precise BN when configured)."""
        if self.cfg.precise_bn_batches > 0:
            precise_batchnorm(
                self.model,
                self.loader(epoch),
                self.cfg.precise_bn_batches,
                self.frozen,
                self.ctx.device,
                self.amp_dtype,
            )
        self.model.eval()
        metrics = evaluate(
            torch_scorer(self.model, self.ctx.device, self.amp_dtype),
            self.val_set,
            self.ctx,
            batch_size=self.cfg.eval_batch_size,
            num_workers=self.cfg.num_workers,
        )
        if self.cfg.best_metric not in metrics:
            raise ConfigError(
                f"best_metric {self.cfg.best_metric!r} is not a validation metric; "
                f"choose from {', '.join(sorted(metrics))}"
            )
        return metrics

    def save(self, epoch: int, metrics: dict[str, Any] | None, is_best: bool) -> None:
        """Write ``last.pt`` (and ``best.pt``); every rank takes part in gathering RNG states."""
        rng = _rng_state(self.ctx)
        if not self.ctx.is_main:
            return
        save_checkpoint(
            self.run_dir / LAST,
            {
                "epoch": epoch,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng,
                "config": self.cfg.to_dict(),
                "labels": self.labels,
                "metrics": metrics or {},
                "best": self.best,
            },
        )
        if is_best:
            tmp = self.run_dir / (BEST + ".tmp")
            shutil.copyfile(self.run_dir / LAST, tmp)
            os.replace(tmp, self.run_dir / BEST)

    def fit(self) -> None:
        """Run the remaining epochs, then plot the curves."""
        cfg = self.cfg
        for epoch in range(self.start_epoch, cfg.epochs):
            started = time.monotonic()
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "lr": self.optimizer.param_groups[0]["lr"],
            }
            set_train_mode(self.net, self.frozen)
            record.update(
                _train_epoch(
                    self.net,
                    self.loader(epoch),
                    self.optimizer,
                    self.scaler,
                    self.heads,
                    self.ctx,
                    self.amp_dtype,
                    f"epoch {epoch + 1}/{cfg.epochs}",
                    cfg.channels_last,
                    cfg.label_smoothing,
                    self.scheduler if self.per_step else None,
                )
            )
            if not self.per_step:
                self.scheduler.step()
            metrics = None
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                metrics = self.validate(epoch)
                record.update({f"val_{k}": v for k, v in metrics.items()})
            record["time_s"] = round(time.monotonic() - started, 2)
            value = metrics[cfg.best_metric] if metrics is not None else None
            is_best = value is not None and (
                self.best["value"] is None or value > self.best["value"]
            )
            if is_best:
                self.best = {"metric": cfg.best_metric, "value": value, "epoch": epoch + 1}
            if self.ctx.is_main:
                # History first: a crash before the checkpoint is written leaves a record that
                # --resume drops (it truncates to the checkpoint's epoch) rather than a gap.
                history.append(self.run_dir, record)
                logger.info("epoch %d/%d: %s", epoch + 1, cfg.epochs, _summary(record))
            self.save(epoch + 1, metrics, is_best)
            barrier()
        if self.ctx.is_main:
            keys = [_head_key("train", self.heads, h, "top1") for h in self.heads]
            keys.append(f"val_{cfg.best_metric}")
            history.plot_curves(self.run_dir, tuple(dict.fromkeys(keys)))
            logger.info(
                "best %s %s at epoch %s; run in %s",
                self.best["metric"],
                self.best["value"],
                self.best["epoch"],
                self.run_dir,
            )


def _summary(record: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
        for k, v in record.items()
        if k != "epoch"
    )
