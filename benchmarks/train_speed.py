"""Training-step speed of the network on CPU: the transposed 1 x k trick and bf16 autocast.

PyTorch's CPU depthwise convolution is slower for 1 x k kernels (the frequency mixers) than for
k x 1 ones; ``MultiScaleMixer`` runs its 1 x k branches as k x 1 convs over a transposed view.
On CPUs with bfloat16 hardware (AMX or AVX512-BF16) bf16 autocast (``amp: bf16``) speeds the
step up further; on others it is emulated and slower, and training uses float32 instead.
This measures a forward + backward step of the training-form network three ways, interleaved in
one process (shared machines drift), and prints the ratios.

    .venv/bin/python benchmarks/train_speed.py [--arch b0] [--frames 50] [--batch 32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from model.inception_next import MultiScaleMixer
from model.registry import create_model
from training.engine import native_cpu_bf16


def _set_transpose(model: torch.nn.Module, on: bool) -> None:
    for module in model.modules():
        if isinstance(module, MultiScaleMixer):
            module.transpose_freq = on


def _step(model: torch.nn.Module, x: torch.Tensor, bf16: bool) -> float:
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.arch, heads={"default": 37}).train()
    x = torch.randn(args.batch, 1, args.frames, 128)
    ways = {
        "plain 1 x k": (False, False),
        "transposed": (True, False),
        "transposed + bf16": (True, True),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for transposed, bf16 in ways.values():  # warm-up every path
        _set_transpose(model, transposed)
        _step(model, x, bf16)
    for _ in range(args.rounds):
        for name, (transposed, bf16) in ways.items():
            _set_transpose(model, transposed)
            times[name].append(_step(model, x, bf16))
    print(
        f"{args.arch} {args.frames}x128 batch {args.batch}, {args.threads} thread(s), "
        f"median of {args.rounds} interleaved steps (forward + backward); bf16 hardware: "
        f"{'yes' if native_cpu_bf16() else 'no (amp: bf16 trains in float32 here)'}"
    )
    base = statistics.median(times["plain 1 x k"])
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"  {name:18s}: {median * 1000:8.1f} ms/step  {args.batch / median:6.1f} clips/s"
            f"  {base / median:5.2f}x"
        )


if __name__ == "__main__":
    main()
