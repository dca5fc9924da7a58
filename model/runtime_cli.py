"""``arinext quantize`` and ``arinext bench``: torch-free commands over artifacts and ONNX graphs.

Registering imports nothing heavy; each command body imports what it runs. Refusals exit with
status 2 and one ``error: ...`` line on stderr, like the other artifact commands.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

__all__ = ["register", "run_bench", "run_quantize"]

_EXIT_ERROR = 2


def _shape(text: str) -> list[int]:
    try:
        dims = [int(part) for part in text.replace("x", ",").split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a shape: {text!r} (e.g. 1,512,128)") from None
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"not a shape: {text!r} (e.g. 1,512,128)")
    return dims


def _agreement(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``quantize`` and ``bench`` to the ``arinext`` parser."""
    from arinext.model.backends import BACKENDS, PRECISION_HINTS
    from arinext.model.quantize import (
        DEFAULT_CALIBRATION_CLIPS,
        DEFAULT_CHECK_CLIPS,
        DEFAULT_MAX_TOP1_DROP,
        DEFAULT_MIN_AGREEMENT,
    )

    quantize = subparsers.add_parser(
        "quantize",
        help="write an int8 version of an fp32 artifact, checked against it",
        description="Static int8 quantisation (QDQ: uint8 activations, int8 per-channel "
        "weights), calibrated on clips through the artifact's own front-end, then run against "
        "the fp32 artifact on held-out clips. Top-1 agreement and the largest probability "
        "difference go into the manifest; below --min-agreement nothing is written (exit 2). "
        "In a Speech Commands layout, testing_list.txt clips are never used and "
        "validation_list.txt clips are the held-out check.",
    )
    quantize.add_argument("artifact", type=Path, help="the fp32 artifact directory")
    quantize.add_argument("--out", type=Path, required=True, help="int8 artifact to write")
    quantize.add_argument(
        "--calibration",
        type=Path,
        metavar="AUDIO_DIR",
        help="folder of clips like those the model will serve (default: synthetic sounds, "
        "with a warning)",
    )
    quantize.add_argument(
        "--clips",
        type=int,
        default=DEFAULT_CALIBRATION_CLIPS,
        help=f"calibration clips (default {DEFAULT_CALIBRATION_CLIPS})",
    )
    quantize.add_argument(
        "--check-clips",
        type=int,
        default=DEFAULT_CHECK_CLIPS,
        help=f"held-out clips compared with fp32 (default {DEFAULT_CHECK_CLIPS})",
    )
    quantize.add_argument(
        "--min-agreement",
        type=_agreement,
        default=DEFAULT_MIN_AGREEMENT,
        help=f"top-1 agreement with fp32 required to write (default {DEFAULT_MIN_AGREEMENT}: "
        "int8 top-1 accuracy then differs by at most 1 point on such clips)",
    )
    quantize.add_argument(
        "--max-top1-drop",
        type=_agreement,
        default=DEFAULT_MAX_TOP1_DROP,
        help="with labelled check clips (a folder per class), the largest top-1 loss allowed "
        f"(default {DEFAULT_MAX_TOP1_DROP}: half a point)",
    )
    quantize.add_argument("--name", help="artifact name (default: the source's)")
    quantize.add_argument("--seed", type=int, default=0, help="clip order and synthetic sounds")
    quantize.add_argument(
        "--overwrite", action="store_true", help="replace --out even if it is not an artifact"
    )
    quantize.set_defaults(func=run_quantize)

    bench = subparsers.add_parser(
        "bench",
        help="ms per clip and clips/s of an artifact or any ONNX file",
        description="Time inference on a random log-mel-like input after warm-up runs, like "
        "OpenVINO's benchmark_app or onnxruntime_perf_test. The input shape comes from the "
        "artifact's manifest, the graph's static shape, or --shape.",
    )
    bench.add_argument("model", type=Path, help="artifact directory or .onnx file")
    bench.add_argument("--backend", choices=BACKENDS, default="onnxruntime")
    bench.add_argument(
        "--precision",
        choices=PRECISION_HINTS,
        default="auto",
        help="OpenVINO inference precision hint (auto: its own choice, bf16 where the CPU has it)",
    )
    bench.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads (0: one per core the process may use; 1)",
    )
    bench.add_argument("--batch", type=int, default=1, help="clips per run (1)")
    bench.add_argument("--runs", type=int, default=50, help="timed runs (50)")
    bench.add_argument("--warmup", type=int, default=5, help="untimed runs first (5)")
    bench.add_argument("--shape", type=_shape, help="one item's input shape, e.g. 1,512,128")
    bench.add_argument(
        "--providers",
        default="CPUExecutionProvider",
        help="ONNX Runtime execution providers, comma-separated (CPUExecutionProvider)",
    )
    bench.add_argument("--json", action="store_true", help="print JSON instead of text")
    bench.set_defaults(func=run_bench)


def _error(message: object) -> int:
    sys.stderr.write(f"error: {message}\n")
    return _EXIT_ERROR


def run_quantize(args: argparse.Namespace) -> int:
    """Quantise one artifact; exit 2 with ``error: ...`` when it is refused."""
    from arinext.model.manifest import Provenance, arinext_version
    from arinext.model.quantize import QuantizeError, quantize_artifact

    try:
        manifest = quantize_artifact(
            args.artifact,
            args.out,
            calibration=args.calibration,
            calibration_clips=args.clips,
            check_clips=args.check_clips,
            min_agreement=args.min_agreement,
            max_top1_drop=args.max_top1_drop,
            name=args.name,
            seed=args.seed,
            # As arinext.model.export records it: sys.argv[0] is a path on this machine.
            provenance=Provenance(
                source=str(args.artifact),
                command=shlex.join(["arinext", *sys.argv[1:]]),
                arinext_version=arinext_version(),
            ),
            overwrite=args.overwrite,
        )
    except QuantizeError as exc:
        return _error(exc)
    record = manifest.quantization
    if record is None:  # an int8 manifest always carries it (Manifest validates that)
        raise AssertionError("int8 artifact without its quantization record")
    accuracy = (
        ""
        if record.check_top1_fp32 is None
        else f", top-1 fp32 {record.check_top1_fp32:.2%} int8 {record.check_top1_int8:.2%}"
    )
    sys.stdout.write(
        f"wrote {args.out}: {manifest.name}, int8, calibrated on {record.calibration_clips} clips "
        f"({record.calibration}); on {record.check_clips} held-out clips top-1 agreement "
        f"{record.top1_agreement:.2%}, max |p diff| {record.max_prob_diff:.4f}{accuracy}\n"
    )
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """Time one model; exit 2 with ``error: ...`` when it cannot be loaded or run."""
    from arinext.model.backends import BackendError
    from arinext.model.bench import bench_model
    from arinext.model.manifest import ArtifactError

    if args.batch < 1 or args.runs < 1 or args.warmup < 0 or args.threads < 0:
        return _error("--batch and --runs must be >= 1, --warmup and --threads >= 0")
    if not args.model.exists():
        return _error(f"{args.model}: no such artifact or ONNX file")
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    try:
        report = bench_model(
            args.model,
            backend=args.backend,
            precision=args.precision,
            threads=args.threads,
            batch=args.batch,
            runs=args.runs,
            warmup=args.warmup,
            shape=args.shape,
            providers=providers,
        )
    except (BackendError, ArtifactError, ValueError) as exc:
        return _error(exc)
    except Exception as exc:  # a runtime failing on this input: say so without a traceback
        return _error(f"inference failed: {exc}")
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return 0
    shape = "x".join(str(d) for d in report["input_shape"])
    sys.stdout.write(
        f"model:      {report['model']}\n"
        f"session:    {report['session']}\n"
        f"input:      {shape} float32, {report['runs']} runs after {args.warmup} warm-up\n"
        f"load:       {report['load_ms']:.1f} ms, first run {report['first_run_ms']:.2f} ms\n"
        f"latency:    median {report['median_ms']:.2f} ms, mean {report['mean_ms']:.2f}, "
        f"min {report['min_ms']:.2f}, p90 {report['p90_ms']:.2f}, max {report['max_ms']:.2f}\n"
        f"per clip:   {report['ms_per_clip']:.3f} ms\n"
        f"throughput: {report['clips_per_second']:.1f} clips/s\n"
    )
    return 0
