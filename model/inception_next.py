"""AudioRepInceptionNeXt: a single-stream CNN with re-parameterisable multi-scale band mixers.

Lau, Rehman, Po, "AudioRepInceptionNeXt: A lightweight single-stream architecture for efficient
audio recognition", Neurocomputing 2024 (arXiv 2404.13551).

Input is a log-mel spectrogram ``[N, 1, T, F]`` (T time frames, F = 128 mel bins). The network is
a ResNet-50-like hierarchy whose block replaces the 3x3 conv by two cascaded mixers: parallel
depthwise T-axis kernels (21, 11, 3) plus identity, then the same along F, followed by a 1x1
inverted bottleneck. After training, every mixer collapses into one depthwise 21-tap conv
(:func:`arinext.model.reparam.reparameterize_model`), which is the model the paper benchmarks.

Written bottom-up: mixer -> block -> stage -> model; the conv+BN unit, the stem and the heads
are shared layers (:mod:`arinext.model.layers`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from arinext.model.layers import ConvBN, MultiHeadClassifier, Stem, load_conv, to_pair
from arinext.model.reparam import pad_kernel_to

__all__ = [
    "DEFAULT_HEADS",
    "AudioRepInceptionNeXt",
    "InceptionNeXtBlock",
    "InceptionNeXtStage",
    "InvertedBottleneck",
    "MultiScaleMixer",
    "authors_key_map",
]

DEFAULT_HEADS: Mapping[str, int] = MappingProxyType({"default": 309})

MixerAxis = Literal["time", "freq", "both"]


def _same(kernel_shape: tuple[int, int]) -> tuple[int, int]:
    """Padding that keeps T and F unchanged for an odd kernel at stride 1."""
    return kernel_shape[0] // 2, kernel_shape[1] // 2


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch 2.3 takes no device (its spelling is deprecated later)
        return torch.is_autocast_cpu_enabled()


class MultiScaleMixer(nn.Module):
    """``ReLU(x + sum_k BN(DWConv_k(x)))`` with depthwise kernels along one axis (or both).

    ``axis="time"`` gives k x 1 kernels, ``"freq"`` 1 x k, ``"both"`` k x k (the paper's 2D
    ablation). Branches are named ``k<size>``, listed largest-role first as in the authors'
    naming (``a``, ``a_medium``, ``a_small``). ``merge_branches()`` merges them into one
    depthwise conv ``fused`` of the largest size with the identity add kept in ``forward`` (the
    paper's form); ``reparameterize()`` also moves the identity into the centre tap.
    """

    def __init__(
        self, channels: int, kernel_sizes: Sequence[int] = (21, 11, 3), axis: MixerAxis = "time"
    ) -> None:
        super().__init__()
        sizes = tuple(int(k) for k in kernel_sizes)
        if not sizes or len(set(sizes)) != len(sizes) or any(k % 2 == 0 for k in sizes):
            raise ValueError(f"kernel sizes must be distinct and odd, got {kernel_sizes}")
        if axis not in ("time", "freq", "both"):
            raise ValueError(f"unknown mixer axis {axis!r}")
        self.channels = channels
        self.kernel_sizes = sizes
        self.axis = axis
        self.identity_folded = False
        # Training-graph speed switches (see forward and _branches_transposed); off only for
        # benchmarks.
        self.float32_on_cpu = True
        self.transpose_freq = True
        for k in sizes:
            shape = self._kernel_shape(k)
            branch = ConvBN(channels, channels, shape, padding=_same(shape), groups=channels)
            self.add_module(f"k{k}", branch)
        self.act = nn.ReLU(inplace=True)

    def _kernel_shape(self, k: int) -> tuple[int, int]:
        return {"time": (k, 1), "freq": (1, k), "both": (k, k)}[self.axis]

    def _merged_kernel(self) -> tuple[Tensor, Tensor]:
        """Sum of the BN-folded branch kernels, each zero-padded to the largest along its axis."""
        size = max(self.kernel_sizes)
        axes = {"time": (2,), "freq": (3,), "both": (2, 3)}[self.axis]
        weights, biases = [], []
        for k in self.kernel_sizes:
            weight, bias = getattr(self, f"k{k}").fused_kernel()
            for axis in axes:
                weight = pad_kernel_to(weight, size, axis)
            weights.append(weight)
            biases.append(bias)
        return torch.stack(weights).sum(0), torch.stack(biases).sum(0)

    def forward(self, x: Tensor) -> Tensor:
        if self.float32_on_cpu and x.device.type == "cpu" and _cpu_autocast():
            # PyTorch's CPU depthwise kernels, backward above all, are slower in bf16 than in
            # float32; the 1 x 1 convs after the mixer take autocast's bf16 again
            # (benchmarks/train_speed.py).
            with torch.autocast("cpu", enabled=False):
                return self._mix(x.float())
        return self._mix(x)

    def _mix(self, x: Tensor) -> Tensor:
        if hasattr(self, "fused"):
            y = self.fused(x)
            if not self.identity_folded:
                y = y + x
        elif self._can_transpose(x):
            y = self._branches_transposed(x)
        else:
            y = x
            for k in self.kernel_sizes:
                y = y + getattr(self, f"k{k}")(x)
        return self.act(y)

    def _can_transpose(self, x: Tensor) -> bool:
        # In channels-last the 1 x k kernels are fast as they are (and a transposed NHWC view
        # would be copied): the trick is for NCHW only.
        return (
            self.axis == "freq"
            and self.transpose_freq
            and not x.is_contiguous(memory_format=torch.channels_last)
            and not torch.onnx.is_in_onnx_export()
            and all(hasattr(getattr(self, f"k{k}"), "conv") for k in self.kernel_sizes)
        )

    def _branches_transposed(self, x: Tensor) -> Tensor:
        """The 1 x k branches as k x 1 convs over a transposed view: same sum, faster on CPU.

        PyTorch's CPU depthwise kernels on NCHW tensors are slower for 1 x k than for k x 1; the
        transposed view costs no copy and the result is identical (tested). Exports keep the
        plain form, so artifacts are unchanged. Channels-last training is faster still and skips
        this (``benchmarks/train_speed.py``).
        """
        xt = x.transpose(2, 3)
        y = xt
        for k in self.kernel_sizes:
            branch = getattr(self, f"k{k}")
            conv = branch.conv
            out = F.conv2d(
                xt,
                conv.weight.transpose(2, 3),
                None,
                conv.stride[::-1],
                conv.padding[::-1],
                conv.dilation[::-1],
                conv.groups,
            )
            y = y + branch.bn(out)
        return y.transpose(2, 3)

    def merge_branches(self) -> None:
        """Merge the branches into ``fused`` (the paper's level); a no-op once merged."""
        if not hasattr(self, "fused"):
            weight, bias = self._merged_kernel()
            shape = self._kernel_shape(max(self.kernel_sizes))
            fused = nn.Conv2d(
                self.channels,
                self.channels,
                shape,
                padding=_same(shape),
                groups=self.channels,
                bias=True,
                device=weight.device,
                dtype=weight.dtype,
            )
            self.fused = load_conv(fused, weight, bias)
            for k in self.kernel_sizes:
                delattr(self, f"k{k}")

    def reparameterize(self) -> None:
        """Merge the branches and fold the identity into the centre tap; a no-op once done."""
        self.merge_branches()
        if not self.identity_folded:
            kh, kw = self.fused.weight.shape[-2:]
            with torch.no_grad():
                self.fused.weight[:, 0, kh // 2, kw // 2] += 1.0
            self.identity_folded = True


class InvertedBottleneck(nn.Module):
    """1x1 expansion (C -> E*C), ReLU, 1x1 projection back to C; last BN gamma starts at 0."""

    def __init__(self, channels: int, expansion: int = 4) -> None:
        super().__init__()
        hidden = channels * expansion
        self.fc1 = ConvBN(channels, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = ConvBN(hidden, channels, zero_init_gamma=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class InceptionNeXtBlock(nn.Module):
    """``ReLU(shortcut(x) + body(x))``; the body's first 1x1 conv carries the stride.

    body = 1x1 ConvBN + ReLU -> time mixer -> frequency mixer -> inverted bottleneck
    (``mixer="2d"``: one mixer of k x k kernels instead of the two band mixers).
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        stride: int | Sequence[int] = 1,
        kernel_sizes: Sequence[int] = (21, 11, 3),
        expansion: int = 4,
        mixer: Literal["band", "2d"] = "band",
        freq_kernel_sizes: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if in_chans != out_chans or to_pair(stride) != (1, 1):
            self.shortcut: nn.Module = ConvBN(in_chans, out_chans, 1, stride=stride)
        else:
            self.shortcut = nn.Identity()
        self.conv_in = ConvBN(in_chans, out_chans, 1, stride=stride)
        self.act_in = nn.ReLU(inplace=True)
        if mixer == "band":
            self.time_mixer = MultiScaleMixer(out_chans, kernel_sizes, "time")
            freq_sizes = kernel_sizes if freq_kernel_sizes is None else freq_kernel_sizes
            self.freq_mixer = MultiScaleMixer(out_chans, freq_sizes, "freq")
            self._mixer_names: tuple[str, ...] = ("time_mixer", "freq_mixer")
        elif mixer == "2d":
            self.mixer = MultiScaleMixer(out_chans, kernel_sizes, "both")
            self._mixer_names = ("mixer",)
        else:
            raise ValueError(f"mixer must be 'band' or '2d', got {mixer!r}")
        self.mlp = InvertedBottleneck(out_chans, expansion)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.act_in(self.conv_in(x))
        for name in self._mixer_names:
            y = getattr(self, name)(y)
        y = self.mlp(y)
        return self.act(self.shortcut(x) + y)


class InceptionNeXtStage(nn.Module):
    """``depth`` blocks at one width; the first one changes width and applies the stride.

    ``block_kernels`` gives each block its own (time, frequency) branch sizes, as the authors'
    configs can (``NUM_BLOCK_TEMP_KERNEL``); by default every mixer uses ``kernel_sizes``.
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        depth: int,
        stride: int | Sequence[int] = 1,
        kernel_sizes: Sequence[int] = (21, 11, 3),
        expansion: int = 4,
        mixer: Literal["band", "2d"] = "band",
        block_kernels: Sequence[tuple[Sequence[int], Sequence[int]]] | None = None,
    ) -> None:
        super().__init__()
        if block_kernels is None:
            block_kernels = [(kernel_sizes, kernel_sizes)] * depth
        if len(block_kernels) != depth:
            raise ValueError(f"{len(block_kernels)} block kernels for {depth} blocks")
        self.blocks = nn.Sequential(
            *(
                InceptionNeXtBlock(
                    in_chans if i == 0 else out_chans,
                    out_chans,
                    stride if i == 0 else 1,
                    time_sizes,
                    expansion,
                    mixer,
                    freq_kernel_sizes=freq_sizes,
                )
                for i, (time_sizes, freq_sizes) in enumerate(block_kernels)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class AudioRepInceptionNeXt(MultiHeadClassifier):
    """Stem, four stages of C, 2C, 4C, 8C channels, global average pool, dropout, linear heads.

    ``forward`` returns ``{head name: logits}`` in the order of ``heads`` (never softmax, also in
    eval mode); global pooling over T and F means any number of frames works. ``strides`` are
    the (time, frequency) strides of each stage's first block (default 1, 2, 2, 2);
    ``block_kernels[stage][block]`` is an optional (time sizes, frequency sizes) pair per block.
    ``architecture_params`` holds the constructor arguments (without heads) as plain JSON.
    """

    def __init__(
        self,
        *,
        width: int = 64,
        depths: Sequence[int] = (3, 4, 6, 3),
        kernel_sizes: Sequence[int] = (21, 11, 3),
        stem_kernel: Sequence[int] = (5, 7),
        expansion: int = 4,
        mixer: Literal["band", "2d"] = "band",
        heads: Mapping[str, int] = DEFAULT_HEADS,
        dropout: float = 0.5,
        in_chans: int = 1,
        strides: Sequence[int | Sequence[int]] | None = None,
        block_kernels: Sequence[Sequence[tuple[Sequence[int], Sequence[int]]]] | None = None,
    ) -> None:
        super().__init__()
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        self.mixer_kind = mixer
        stage_strides = [to_pair(s) for s in (strides or [1] + [2] * (len(depths) - 1))]
        if len(stage_strides) != len(depths):
            raise ValueError(f"{len(stage_strides)} strides for {len(depths)} stages")
        if block_kernels is not None and len(block_kernels) != len(depths):
            raise ValueError(f"block kernels for {len(block_kernels)} of {len(depths)} stages")
        self.architecture_params = {
            "width": int(width),
            "depths": [int(d) for d in depths],
            "kernel_sizes": list(self.kernel_sizes),
            "stem_kernel": list(to_pair(stem_kernel)),
            "expansion": int(expansion),
            "mixer": mixer,
            "dropout": float(dropout),
            "in_chans": int(in_chans),
            "strides": [list(s) for s in stage_strides],
            "block_kernels": None
            if block_kernels is None
            else [
                [[[int(k) for k in t], [int(k) for k in f]] for t, f in stage]
                for stage in block_kernels
            ],
        }
        self.stem = Stem(in_chans, width, stem_kernel)
        dims = [width * 2**i for i in range(len(depths))]
        stages = []
        prev = width
        for i, (depth, dim) in enumerate(zip(depths, dims, strict=True)):
            stages.append(
                InceptionNeXtStage(
                    prev,
                    dim,
                    depth,
                    stage_strides[i],
                    self.kernel_sizes,
                    expansion,
                    mixer,
                    None if block_kernels is None else block_kernels[i],
                )
            )
            prev = dim
        self.stages = nn.Sequential(*stages)
        self.init_heads(prev, heads, dropout)

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled embedding ``[N, 8C]`` (before dropout and heads)."""
        x = self.stages(self.stem(x))
        return self.pool(x).flatten(1)


# --- authors' checkpoint naming -----------------------------------------------------------------

_AUTHORS_SIZE_SUFFIX = ("", "_medium", "_small")  # large, medium, small kernel
_BLOCK_KEY = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.(.+)$")
_PARAM_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _authors_unit(unit: str, block: nn.Module) -> tuple[str, str] | None:
    """Authors' (conv name, BN name) inside ``branch2``/block for one of our ConvBN paths."""
    fixed = {
        "shortcut": ("branch1", "branch1_bn"),
        "conv_in": ("branch2.a_head", "branch2.a_head_bn"),
        "mlp.fc1": ("branch2.c", "branch2.c_bn"),
        "mlp.fc2": ("branch2.d", "branch2.d_bn"),
    }
    if unit in fixed:
        return fixed[unit]
    for mixer, letter in (("time_mixer", "a"), ("freq_mixer", "b")):
        sizes = getattr(getattr(block, mixer, None), "kernel_sizes", ())
        for position, k in enumerate(sizes):  # role order: large, medium, small
            if unit == f"{mixer}.k{k}":
                suffix = _AUTHORS_SIZE_SUFFIX[position]
                return f"branch2.{letter}{suffix}", f"branch2.{letter}_bn{suffix}"
    return None


def _authors_key(key: str, model: AudioRepInceptionNeXt) -> str:
    path, _, param = key.rpartition(".")
    if param not in _PARAM_SUFFIXES:
        raise KeyError(key)
    if path == "stem.conv":
        return f"s1.pathway0_stem.conv.{param}"
    if path == "stem.bn":
        return f"s1.pathway0_stem.bn.{param}"
    if path.startswith("heads."):
        name = path.removeprefix("heads.")
        projection = "projection" if len(model.head_names) == 1 else f"projection_{name}"
        return f"head.{projection}.{param}"
    match = _BLOCK_KEY.match(key)
    if match is None:
        raise KeyError(key)
    stage, block, rest = int(match[1]), int(match[2]), match[3]
    prefix = f"s{stage + 2}.pathway0_res{block}."
    inner = rest.rpartition(".")[0]
    for mixer, letter in (("time_mixer", "a"), ("freq_mixer", "b")):
        if inner == f"{mixer}.fused":
            return f"{prefix}branch2.{letter}_reparam.{param}"
    unit, _, part = inner.rpartition(".")
    names = _authors_unit(unit, model.get_submodule(f"stages.{stage}.blocks.{block}"))
    if names is None or part not in ("conv", "bn"):
        raise KeyError(key)
    return prefix + (names[0] if part == "conv" else names[1]) + f".{param}"


def authors_key_map(model: AudioRepInceptionNeXt) -> dict[str, str]:
    """Map the authors' (PySlowFast-style) state-dict keys to ``model``'s state-dict keys.

    Works for the train form and for the paper-merged form (``reparameterize_model`` at
    ``ReparamLevel.PAPER``): in the merged form ``...branch2.a_reparam.*``/``b_reparam.*`` map
    to ``time_mixer.fused.*``/``freq_mixer.fused.*`` and the authors' branch keys, which a merged
    checkpoint still carries, have no entry (the importer drops them). Authors' naming:
    ``branch2.a_head`` first 1x1, ``a``/``a_medium``/``a_small`` time kernels (large to small),
    ``b*`` frequency kernels, ``c``/``d`` the inverted bottleneck, ``branch1`` the shortcut;
    one head is ``head.projection``, several are ``head.projection_<name>``.
    Raises ``ValueError`` for forms the authors never saved (2D mixer, full fold).
    """
    mixers = [m for m in model.modules() if isinstance(m, MultiScaleMixer)]
    if model.mixer_kind != "band" or any(len(m.kernel_sizes) != 3 for m in mixers):
        raise ValueError("the authors' layout exists only for band mixers with three kernels")
    for module in model.modules():
        if isinstance(module, MultiScaleMixer) and module.identity_folded:
            raise ValueError("identity-folded mixers have no counterpart in the authors' layout")
        if isinstance(module, ConvBN) and hasattr(module, "fused"):
            raise ValueError("fully folded conv+BN units have no authors' counterpart")
    return {_authors_key(key, model): key for key in model.state_dict()}
