"""Speed of given artifacts on every backend, interleaved in one run: which configuration to serve.

Each artifact runs on ONNX Runtime and, when the openvino extra is installed, on OpenVINO (fp32
artifacts with its default precision and with f32 forced), at batch 1 on one thread (a lone
request) and at ``--batch`` on ``--threads`` threads (the service's batches; 16 is its default
``ARINEXT_MAX_BATCH``). Inputs have the shape of each artifact's own front-end. Ratios are
against the first artifact on ONNX Runtime.

    taskset -c 1 python benchmarks/artifact_speed.py artifacts/speech-commands-b0 \\
        artifacts/speech-commands-b0-int8
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from machine import cpu_model

from arinext.model.backends import available_backends, cpu_threads, open_session
from arinext.model.bench import Timing, random_input, time_interleaved
from arinext.model.manifest import MODEL_FILE, Manifest, verify_artifact


def configurations(manifest: Manifest) -> list[tuple[str, str]]:
    """(backend, precision hint) pairs worth timing for this artifact."""
    rows = [("onnxruntime", "auto")]
    if "openvino" in available_backends():
        rows += [("openvino", "auto")]
        if manifest.precision == "fp32":
            rows += [("openvino", "f32")]
    return rows


def timings(rows: list, threads: int, batch: int, runs: int) -> tuple[list[Timing], list[str]]:
    calls, descriptions = [], []
    for directory, manifest, backend, hint in rows:
        cfg = manifest.frontend
        session = open_session(
            directory / MODEL_FILE, backend=backend, precision=hint, threads=threads
        )
        feed = {manifest.input: random_input(batch, (1, cfg.num_frames, cfg.n_mels))}
        calls.append(lambda s=session, f=feed: s.run(s.output_names, f))
        descriptions.append(session.description)
    return time_interleaved(calls, runs=runs, warmup=3, batch=batch), descriptions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", type=Path, nargs="+")
    parser.add_argument("--batch", type=int, default=16, help="the batched column (16)")
    parser.add_argument("--threads", type=int, default=cpu_threads(), help="threads at --batch")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per row (50)")
    args = parser.parse_args()
    rows = []
    for directory in args.artifacts:
        manifest = verify_artifact(directory)
        rows += [(directory, manifest, b, h) for b, h in configurations(manifest)]
    single, descriptions = timings(rows, 1, 1, args.runs)
    batched, _ = timings(rows, args.threads, args.batch, max(5, args.runs // 5))
    print(
        f"CPU: {cpu_model()}, {cpu_threads()} usable of {os.cpu_count()} CPUs; batch 1: 1 thread; "
        f"batch {args.batch}: {args.threads} threads; medians of interleaved runs; load average "
        f"{os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| artifact | precision | session | batch 1: ms/clip | vs first | "
        f"batch {args.batch}: ms/clip | vs first |"
    )
    print("|---|---|---|---:|---:|---:|---:|")
    for (directory, manifest, _, _), one, many, described in zip(
        rows, single, batched, descriptions, strict=True
    ):
        print(
            f"| {directory.name} | {manifest.precision} | {described} | {one.ms_per_clip:.3f} "
            f"| {single[0].ms_per_clip / one.ms_per_clip:.2f}x | {many.ms_per_clip:.3f} "
            f"| {batched[0].ms_per_clip / many.ms_per_clip:.2f}x |"
        )


if __name__ == "__main__":
    main()
