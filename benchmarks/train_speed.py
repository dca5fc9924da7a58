"""Training-step speed of the network on CPU: memory format, the transposed 1 x k trick, bf16.

PyTorch's CPU depthwise convolution is slower for 1 x k kernels (the frequency mixers) than for
k x 1 ones; on NCHW tensors ``MultiScaleMixer`` runs its 1 x k branches as k x 1 convs over a
transposed view. In channels-last (NHWC, ``channels_last: true`` in a recipe) oneDNN's kernels
need no such trick and the whole step is faster. On CPUs with bfloat16 hardware (AMX or
AVX512-BF16) bf16 autocast (``amp: bf16``) speeds the step up further; on others it is emulated
and slower, and training uses float32 instead. Under bf16 autocast the mixers' depthwise convs
still run in float32 (``MultiScaleMixer.float32_on_cpu``): PyTorch's CPU depthwise kernels are
slower in bf16, backward above all; "mixers in bf16" measures the other way. With
``--compile`` the channels-last network also runs through ``torch.compile`` (``compile: true``),
after compiling it first (minutes). This measures a forward + backward step of the
training-form network these ways, interleaved in one process (shared machines drift), and prints
the ratios.

    .venv/bin/python benchmarks/train_speed.py [--arch b0] [--frames 50] [--batch 32] [--compile]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Any

import torch

from arinext.model.inception_next import MultiScaleMixer
from arinext.model.registry import create_model
from arinext.training.engine import native_cpu_bf16

HEADS = {"default": 37}  # the default model's classes


def _set_switches(model: torch.nn.Module, transposed: bool, float32_mixers: bool) -> None:
    for module in model.modules():
        if isinstance(module, MultiScaleMixer):
            module.transpose_freq = transposed
            module.float32_on_cpu = float32_mixers


def _nhwc_copy(model: torch.nn.Module, arch: str) -> torch.nn.Module:
    """A second network with ``model``'s weights, in channels-last as the engine sets it."""
    twin = create_model(arch, heads=HEADS).train()
    twin.load_state_dict(model.state_dict())
    return twin.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def _step(model: torch.nn.Module, x: torch.Tensor, bf16: bool) -> float:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(x)
    sum(v.float().sum() for v in out.values()).backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="b0")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.arch, heads=HEADS).train()
    nhwc = _nhwc_copy(model, args.arch)
    x = torch.randn(args.batch, 1, args.frames, 128)
    x_nhwc = x.contiguous(memory_format=torch.channels_last)
    # name -> (network, transposed, bf16, float32 mixers, input)
    ways: dict[str, tuple[Any, bool, bool, bool, torch.Tensor]] = {
        "plain 1 x k": (model, False, False, True, x),
        "transposed": (model, True, False, True, x),
        "transposed + bf16": (model, True, True, True, x),
        "channels-last": (nhwc, True, False, True, x_nhwc),
        "channels-last + bf16": (nhwc, True, True, True, x_nhwc),
        "channels-last + bf16, mixers in bf16": (nhwc, True, True, False, x_nhwc),
    }
    if args.compile:
        compiled = torch.compile(_nhwc_copy(model, args.arch), dynamic=False)
        ways["channels-last, compiled"] = (compiled, True, False, True, x_nhwc)
        compiled_bf16 = torch.compile(_nhwc_copy(model, args.arch), dynamic=False)
        ways["channels-last + bf16, compiled"] = (compiled_bf16, True, True, True, x_nhwc)
    times: dict[str, list[float]] = {name: [] for name in ways}
    for name, (net, transposed, bf16, f32, inputs) in ways.items():  # warm-up (and compile)
        _set_switches(net, transposed, f32)
        started = time.perf_counter()
        _step(net, inputs, bf16)
        logging.info("%s: first step %.1f s", name, time.perf_counter() - started)
    for _ in range(args.rounds):
        for name, (net, transposed, bf16, f32, inputs) in ways.items():
            _set_switches(net, transposed, f32)
            times[name].append(_step(net, inputs, bf16))
    print(
        f"{args.arch} {args.frames}x128 batch {args.batch}, {args.threads} thread(s), "
        f"median of {args.rounds} interleaved steps (forward + backward); bf16 hardware: "
        f"{'yes' if native_cpu_bf16() else 'no (amp: bf16 trains in float32 here)'}"
    )
    base = statistics.median(times["plain 1 x k"])
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"  {name:36s}: {median * 1000:8.1f} ms/step  {args.batch / median:6.1f} clips/s"
            f"  {base / median:5.2f}x"
        )


if __name__ == "__main__":
    main()
