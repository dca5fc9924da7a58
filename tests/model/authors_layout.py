"""Authors'-layout checkpoints for any cfg, and an independent forward pass over their keys.

Nothing here uses ``model.*``: the key names and shapes follow ``checkpoint_layout_b1.txt`` (the
generator is checked against it and against the reference checkpoint), and the forward pass is
written from the structure in REFERENCE_NOTES (stem, blocks of 1x1 -> time mixer -> frequency
mixer -> inverted bottleneck, global pool, linear heads) directly over the authors' keys. So
importing one of these checkpoints and matching this forward pass checks the importer's key
mapping and network against the authors' structure, not against itself.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

STAGE_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
MEDIUM, SMALL = 11, 3  # fixed branch sizes; the cfg sets each block's large kernel
EPS = 1e-5
ROLE_SUFFIX = {"large": "", "medium": "_medium", "small": "_small"}


@dataclass
class AuthorsCfg:
    """The network and audio part of an authors' cfg."""

    width: int = 32
    depth: int = 50
    num_groups: int = 1
    classes: list[int] = field(default_factory=lambda: [309])
    temp_kernels: list[list[int]] = field(default_factory=lambda: [[5], [21], [21], [21], [21]])
    freq_kernels: list[list[int]] = field(default_factory=lambda: [[7], [21], [21], [21], [21]])
    blocks_with_temp_kernel: list[int] | None = None  # None: every block
    blocks_with_freq_kernel: list[int] | None = None
    time_strides: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    freq_strides: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    dataset: str = "vggsound"
    sample_rate: int = 16000
    window_ms: float = 20
    hop_ms: float = 10
    clip_seconds: float = 5.119
    frames: int = 512
    bands: int = 128
    views: int = 2

    @property
    def depths(self) -> tuple[int, ...]:
        return STAGE_DEPTHS[self.depth]

    def block_kernels(self, stage: int, axis: str) -> list[int]:
        """Large kernel of each block of ``stage`` along ``axis`` ("time"/"freq")."""
        depth = self.depths[stage]
        kernels = (self.temp_kernels if axis == "time" else self.freq_kernels)[stage + 1]
        counts = self.blocks_with_temp_kernel if axis == "time" else self.blocks_with_freq_kernel
        n = depth if counts is None else counts[stage]
        return ((kernels * depth)[:n] + [1] * (depth - n))[:depth]

    def heads(self) -> list[str]:
        """The authors' projection names."""
        if len(self.classes) == 1:
            return ["projection"]
        return ["projection_verb", "projection_noun"]

    def yaml(self, merged: bool) -> str:
        depths = self.depths
        cfg: dict[str, Any] = {
            "MODEL": {
                "MODEL_NAME": "AudioRepInceptionNeXt",
                "NUM_CLASSES": list(self.classes),
                "MERGE_MODE": merged,
                "DROPOUT_RATE": 0.5,
                "HEAD_ACT": "softmax",
                "ARCH": "fast",
            },
            "RESNET": {
                "WIDTH_PER_GROUP": self.width,
                "DEPTH": self.depth,
                "NUM_GROUPS": self.num_groups,
                "TRANS_FUNC": "ms_threeway_dw_bottleneck_transform",
                "STRIDE_1X1": False,
                "TEMP_KERNEL_SIZES": [[list(k)] for k in self.temp_kernels],
                "FREQ_KERNEL_SIZES": [[list(k)] for k in self.freq_kernels],
                "NUM_BLOCK_TEMP_KERNEL": [
                    [d if self.blocks_with_temp_kernel is None else self.blocks_with_temp_kernel[i]]
                    for i, d in enumerate(depths)
                ],
                "NUM_BLOCK_FREQ_KERNEL": [
                    [d if self.blocks_with_freq_kernel is None else self.blocks_with_freq_kernel[i]]
                    for i, d in enumerate(depths)
                ],
                "TIME_STRIDES": [[s] for s in self.time_strides],
                "FREQUENCY_STRIDES": [[s] for s in self.freq_strides],
                "FREQUENCY_DILATIONS": [[1]] * 4,
                "ZERO_INIT_FINAL_BN": True,
            },
            "AUDIO_DATA": {
                "SAMPLING_RATE": self.sample_rate,
                "WINDOW_LENGTH": self.window_ms,
                "HOP_LENGTH": self.hop_ms,
                "CLIP_SECS": self.clip_seconds,
                "NUM_FRAMES": self.frames,
                "NUM_FREQUENCIES": self.bands,
            },
            "DATA": {"INPUT_CHANNEL_NUM": [1]},
            "TRAIN": {"DATASET": self.dataset},
            "TEST": {"DATASET": self.dataset, "NUM_ENSEMBLE_VIEWS": self.views},
        }
        return yaml.safe_dump(cfg)


def _bn(name: str, channels: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    for param in ("weight", "bias", "running_mean", "running_var"):
        yield f"{name}.{param}", (channels,)
    yield f"{name}.num_batches_tracked", ()


def _mixer_keys(prefix: str, axis: str, channels: int, large: int, merged: bool):
    letter = "a" if axis == "time" else "b"
    for role, size in (("large", large), ("medium", MEDIUM), ("small", SMALL)):
        suffix = ROLE_SUFFIX[role]
        shape = (channels, 1, size, 1) if axis == "time" else (channels, 1, 1, size)
        yield f"{prefix}{letter}{suffix}.weight", shape
        yield from _bn(f"{prefix}{letter}_bn{suffix}", channels)
    if merged:
        shape = (channels, 1, large, 1) if axis == "time" else (channels, 1, 1, large)
        yield f"{prefix}{letter}_reparam.weight", shape
        yield f"{prefix}{letter}_reparam.bias", (channels,)


def layout(cfg: AuthorsCfg, merged: bool = False) -> dict[str, tuple[int, ...]]:
    """Every key and shape the authors' network of ``cfg`` saves (``merged``: with reparams)."""
    keys: dict[str, tuple[int, ...]] = {}
    width = cfg.width
    keys["s1.pathway0_stem.conv.weight"] = (
        width,
        1,
        cfg.temp_kernels[0][0],
        cfg.freq_kernels[0][0],
    )
    keys.update(_bn("s1.pathway0_stem.bn", width))
    dim_in = width
    for stage, depth in enumerate(cfg.depths):
        dim_out = width * 2**stage
        inner = 4 * cfg.num_groups * dim_out
        stride = (cfg.time_strides[stage], cfg.freq_strides[stage])
        for block in range(depth):
            prefix = f"s{stage + 2}.pathway0_res{block}."
            c_in = dim_in if block == 0 else dim_out
            if c_in != dim_out or (block == 0 and stride != (1, 1)):
                keys[f"{prefix}branch1.weight"] = (dim_out, c_in, 1, 1)
                keys.update(_bn(f"{prefix}branch1_bn", dim_out))
            b2 = f"{prefix}branch2."
            keys[f"{b2}a_head.weight"] = (dim_out, c_in, 1, 1)
            keys.update(_bn(f"{b2}a_head_bn", dim_out))
            for axis in ("time", "freq"):
                large = cfg.block_kernels(stage, axis)[block]
                keys.update(_mixer_keys(b2, axis, dim_out, large, merged))
            keys[f"{b2}c.weight"] = (inner, dim_out, 1, 1)
            keys.update(_bn(f"{b2}c_bn", inner))
            keys[f"{b2}d.weight"] = (dim_out, inner, 1, 1)
            keys.update(_bn(f"{b2}d_bn", dim_out))
        dim_in = dim_out
    for head, classes in zip(cfg.heads(), cfg.classes, strict=True):
        keys[f"head.{head}.weight"] = (classes, width * 8)
        keys[f"head.{head}.bias"] = (classes,)
    return keys


def random_state(cfg: AuthorsCfg, seed: int = 0, residual: float = 0.25) -> dict[str, Tensor]:
    """Train-form weights: He-scaled convs, random BN affine, statistics calibrated on noise and
    then perturbed (so BN fusion is exercised), heads scaled to logits of O(1).

    ``residual`` scales each block's last BN gamma: small residual branches, as in trained
    ResNets; large ones make a deep random network chaotic, so that float32 rounding alone moves
    the logits by more than 1e-4.
    """
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for key, shape in layout(cfg).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(100)
        elif key.endswith("running_mean"):
            state[key] = torch.zeros(shape)
        elif key.endswith("running_var"):
            state[key] = torch.ones(shape)
        elif key.endswith(".bias"):
            state[key] = torch.randn(shape, generator=gen) * 0.1
        elif "_bn" in key or ".bn." in key:  # BN gamma
            state[key] = torch.rand(shape, generator=gen) * 0.8 + 0.4
        else:  # conv or linear weight, He (fan-in) scale; BN calibration normalises anyway
            fan_in = shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1)
            state[key] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
    for key in state:
        if key.endswith("branch2.d_bn.weight"):
            state[key] = state[key] * residual
    calibration = log_mel_like(2, cfg, gen)
    forward(state, calibration, cfg, calibrate=True)
    for key in list(state):
        if key.endswith("running_mean"):
            std = state[key.replace("running_mean", "running_var")].sqrt()
            state[key] = state[key] + torch.randn(state[key].shape, generator=gen) * 0.02 * std
        elif key.endswith("running_var"):
            state[key] = state[key] * (torch.rand(state[key].shape, generator=gen) * 0.1 + 0.95)
    features = forward(state, calibration, cfg, features_only=True)
    for head in cfg.heads():
        weight = torch.randn(state[f"head.{head}.weight"].shape, generator=gen)
        state[f"head.{head}.weight"] = weight * (1.5 / (features @ weight.T).std())
    return state


def log_mel_like(batch: int, cfg: AuthorsCfg, gen: torch.Generator) -> Tensor:
    """Noise with log-mel statistics (mean -4, std 2), the inputs the network is built for."""
    return torch.randn(batch, 1, cfg.frames, cfg.bands, generator=gen) * 2 - 4


def _fold(state: dict[str, Tensor], conv: str, bn: str) -> tuple[Tensor, Tensor]:
    scale = state[f"{bn}.weight"] / (state[f"{bn}.running_var"] + EPS).sqrt()
    weight = state[f"{conv}.weight"] * scale.reshape(-1, 1, 1, 1)
    return weight, state[f"{bn}.bias"] - state[f"{bn}.running_mean"] * scale


def merged_state(state: dict[str, Tensor], cfg: AuthorsCfg) -> dict[str, Tensor]:
    """What the authors' kernel merging adds: ``a_reparam``/``b_reparam`` per block (paper eq.)."""
    merged = dict(state)
    for stage, depth in enumerate(cfg.depths):
        for block in range(depth):
            b2 = f"s{stage + 2}.pathway0_res{block}.branch2."
            for axis, letter, dim in (("time", "a", 2), ("freq", "b", 3)):
                large = cfg.block_kernels(stage, axis)[block]
                size = max(large, MEDIUM, SMALL)
                if size != large:
                    raise ValueError("the authors merge only kernels of 11 taps or more")
                weight = torch.zeros(0)
                bias = torch.zeros(0)
                for role in ("large", "medium", "small"):
                    suffix = ROLE_SUFFIX[role]
                    w, b = _fold(state, f"{b2}{letter}{suffix}", f"{b2}{letter}_bn{suffix}")
                    pad = (size - w.shape[dim]) // 2
                    w = F.pad(w, (pad, pad, 0, 0) if dim == 3 else (0, 0, pad, pad))
                    weight = w if weight.numel() == 0 else weight + w
                    bias = b if bias.numel() == 0 else bias + b
                merged[f"{b2}{letter}_reparam.weight"] = weight
                merged[f"{b2}{letter}_reparam.bias"] = bias
    return merged


def _batch_norm(state: dict[str, Tensor], name: str, x: Tensor, calibrate: bool) -> Tensor:
    if calibrate:  # running statistics := this batch's (momentum 1)
        F.batch_norm(
            x,
            state[f"{name}.running_mean"],
            state[f"{name}.running_var"],
            training=True,
            momentum=1.0,
            eps=EPS,
        )
    return F.batch_norm(
        x,
        state[f"{name}.running_mean"],
        state[f"{name}.running_var"],
        state[f"{name}.weight"],
        state[f"{name}.bias"],
        training=False,
        eps=EPS,
    )


def _conv(state: dict[str, Tensor], name: str, x: Tensor, stride=(1, 1), bias=False) -> Tensor:
    weight = state[f"{name}.weight"]
    groups = x.shape[1] if weight.shape[1] == 1 and x.shape[1] > 1 else 1
    padding = (weight.shape[2] // 2, weight.shape[3] // 2)
    b = state[f"{name}.bias"] if bias else None
    return F.conv2d(x, weight, b, stride=stride, padding=padding, groups=groups)


def _mixer(state, b2: str, letter: str, h: Tensor, merged: bool, calibrate: bool) -> Tensor:
    if merged:
        return F.relu(h + _conv(state, f"{b2}{letter}_reparam", h, bias=True))
    y = h
    for suffix in ROLE_SUFFIX.values():
        y = y + _batch_norm(
            state, f"{b2}{letter}_bn{suffix}", _conv(state, f"{b2}{letter}{suffix}", h), calibrate
        )
    return F.relu(y)


def forward(
    state: dict[str, Tensor],
    x: Tensor,
    cfg: AuthorsCfg,
    merged: bool = False,
    calibrate: bool = False,
    features_only: bool = False,
) -> Any:
    """Eval-mode logits per projection (``calibrate``: set BN statistics from this batch)."""
    with torch.no_grad():
        y = _conv(state, "s1.pathway0_stem.conv", x, stride=(2, 2))
        y = F.relu(_batch_norm(state, "s1.pathway0_stem.bn", y, calibrate))
        y = F.max_pool2d(y, 3, stride=2, padding=1)
        for stage, depth in enumerate(cfg.depths):
            for block in range(depth):
                prefix = f"s{stage + 2}.pathway0_res{block}."
                stride = (
                    (cfg.time_strides[stage], cfg.freq_strides[stage]) if block == 0 else (1, 1)
                )
                b2 = f"{prefix}branch2."
                h = _conv(state, f"{b2}a_head", y, stride=stride)
                h = F.relu(_batch_norm(state, f"{b2}a_head_bn", h, calibrate))
                h = _mixer(state, b2, "a", h, merged, calibrate)
                h = _mixer(state, b2, "b", h, merged, calibrate)
                h = F.relu(_batch_norm(state, f"{b2}c_bn", _conv(state, f"{b2}c", h), calibrate))
                h = _batch_norm(state, f"{b2}d_bn", _conv(state, f"{b2}d", h), calibrate)
                if f"{prefix}branch1.weight" in state:
                    shortcut = _conv(state, f"{prefix}branch1", y, stride=stride)
                    shortcut = _batch_norm(state, f"{prefix}branch1_bn", shortcut, calibrate)
                else:
                    shortcut = y
                y = F.relu(shortcut + h)
        features = y.mean(dim=(2, 3))
        if features_only:
            return features
        return {
            head: F.linear(features, state[f"head.{head}.weight"], state[f"head.{head}.bias"])
            for head in cfg.heads()
        }


def checkpoint(state: dict[str, Tensor], cfg: AuthorsCfg, merged: bool) -> dict[str, Any]:
    """What the authors' training writes: ``torch.save`` of this dict."""
    return {
        "epoch": 1,
        "model_state": copy.copy(state),
        "optimizer_state": None,
        "cfg": cfg.yaml(merged),
    }
