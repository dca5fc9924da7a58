"""Training-step speed of the network on CPU, with and without the transposed 1 x k trick.

PyTorch's CPU depthwise convolution is much slower for 1 x k kernels (the frequency mixers)
than for k x 1 ones; ``MultiScaleMixer`` runs its 1 x k branches as k x 1 convs over a
transposed view. This measures a forward + backward step of the training-form network both
ways, interleaved in one process (shared machines drift), and prints the ratio.

    .venv/bin/python benchmarks/train_speed.py [--arch b0] [--frames 100] [--batch 32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from model.inception_next import MultiScaleMixer
from model.registry import create_model


def _set_transpose(model: torch.nn.Module, on: bool) -> None:
    for module in model.modules():
        if isinstance(module, MultiScaleMixer):
            module.transpose_freq = on


def _step(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    out = model(x)
    sum(v.sum() for v in out.values()).backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="b0")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.arch, heads={"default": 37}).train()
    x = torch.randn(args.batch, 1, args.frames, 128)
    times: dict[bool, list[float]] = {True: [], False: []}
    for on in (True, False):  # warm-up both paths
        _set_transpose(model, on)
        _step(model, x)
    for _ in range(args.rounds):
        for on in (False, True):
            _set_transpose(model, on)
            times[on].append(_step(model, x))
    plain, fast = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"{args.arch} {args.frames}x128 batch {args.batch}, {args.threads} thread(s), "
        f"median of {args.rounds} interleaved steps (forward + backward)"
    )
    print(f"  plain 1 x k convs : {plain * 1000:8.1f} ms/step  {args.batch / plain:6.1f} clips/s")
    print(f"  transposed k x 1  : {fast * 1000:8.1f} ms/step  {args.batch / fast:6.1f} clips/s")
    print(f"  speed-up          : {plain / fast:8.2f}x")


if __name__ == "__main__":
    main()
