"""Inference speed of the exported models in ONNX Runtime on this machine's CPU.

Reproduces the paper's speed comparison (Table II: train form vs merged, and the Slow-Fast
baseline) for what the service actually runs: each network is exported with random weights
through ``model.export.export_artifact`` at every re-parameterisation level, then timed with
ONNX Runtime at batch 1 on one thread (the latency a single request sees) and at batch 32 on all
threads (throughput). 309 classes, 512 x 128 log-mel input.

    python benchmarks/model_speed.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from machine import cpu_model

from model.audio_config import get_preset
from model.export import export_artifact
from model.manifest import INPUT_NAME, MODEL_FILE, Manifest
from model.registry import create_model

CLASSES = 309
CASES = (
    ("b0", "none"),
    ("b0", "paper"),
    ("b0", "full"),
    ("b1", "none"),
    ("b1", "paper"),
    ("b1", "full"),
    ("slowfast_r50", "none"),
)
LEVEL_NAMES = {"none": "train form", "paper": "paper-merged", "full": "full fold"}


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def ms_per_clip(
    sessions: list[ort.InferenceSession], batch: int, warmup: int, runs: int
) -> list[float]:
    """Median wall time of one ``run`` divided by the batch size, in ms, per session.

    The sessions take turns run by run, so that load from other processes on a shared machine
    falls on all of them alike instead of on whichever model happened to run at the time.
    """
    x = np.random.default_rng(0).standard_normal((batch, 1, 512, 128)).astype(np.float32) * 2 - 4
    feed = {INPUT_NAME: x}
    for sess in sessions:
        for _ in range(warmup):
            sess.run(None, feed)
    times = np.empty((runs, len(sessions)))
    for i in range(runs):
        for j, sess in enumerate(sessions):
            start = time.perf_counter()
            sess.run(None, feed)
            times[i, j] = time.perf_counter() - start
    return [float(t) * 1e3 / batch for t in np.median(times, axis=0)]


def export(architecture: str, level: str, directory: Path) -> Manifest:
    model = create_model(architecture, {"vggsound": CLASSES})
    return export_artifact(
        model,
        directory,
        name=f"{architecture}-{level}",
        architecture=architecture,
        frontend=get_preset("vggsound"),
        labels={"vggsound": [f"class_{i}" for i in range(CLASSES)]},
        level=level,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few runs, for a smoke test")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    runs1, runs32 = (5, 2) if args.quick else (30, 10)
    threads = os.cpu_count() or 1
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="arinext-bench-") as tmp:
        paths, manifests = [], []
        for architecture, level in CASES:
            directory = Path(tmp) / f"{architecture}-{level}"
            manifests.append(export(architecture, level, directory))
            paths.append(directory / MODEL_FILE)
            print(f"  exported {architecture} {level}", file=sys.stderr, flush=True)
        latency = ms_per_clip([session(p, 1) for p in paths], batch=1, warmup=3, runs=runs1)
        batched = ms_per_clip([session(p, threads) for p in paths], 32, warmup=1, runs=runs32)

    print(
        f"CPU: {cpu_model()}, {threads} threads; ONNX Runtime {ort.__version__}; "
        f"batch 1: 1 thread, median of {runs1} runs; batch 32: {threads} threads, median of "
        f"{runs32} runs; input 512x128, {CLASSES} classes; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n"
    )
    print(
        "| model | form | params | GMACs | batch 1, 1 thread: ms/clip | clips/s "
        "| batch 32, all threads: ms/clip | clips/s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (architecture, level), manifest, one, many in zip(
        CASES, manifests, latency, batched, strict=True
    ):
        print(
            f"| {architecture} | {LEVEL_NAMES[level]} | {manifest.num_params / 1e6:.2f}M | "
            f"{manifest.gflops:.2f} | {one:.1f} | {1e3 / one:.1f} | {many:.1f} | {1e3 / many:.1f} |"
        )


if __name__ == "__main__":
    main()
