"""Inference speed of every form, precision and backend of the network, in one interleaved run.

For b0 and b1 (and the Slow-Fast baseline in train form) this exports random-weight models through
``arinext.model.export.export_artifact`` at every re-parameterisation level, makes the int8 QDQ
graph of the full fold with ``arinext.model.quantize`` (synthetic calibration: speed does not depend
on the weights' values), and times each on ONNX Runtime and OpenVINO (``arinext.model.backends``):

- the paper-merged fp32 export on ONNX Runtime is the stand-in for the authors' own merged model
  (measured equal to it within 3 %) and the baseline every ratio is relative to;
- the same export on OpenVINO with its default hints is the best a user of the authors' model
  could do without this project;
- the full fold in fp32 (ONNX Runtime; OpenVINO f32 and its default, bf16 where the CPU has it) and
  in int8 (both runtimes; the whole-body scheme, the first ``arinext quantize`` tries) are what
  ``arinext`` serves.

Batch 1 on one thread is the latency a lone request sees; batch 32 on ``--threads`` threads (the
CPUs this process may use) is throughput. All sessions take turns run by run
(``arinext.model.bench.time_interleaved``), so load from other processes falls on all of them alike
and the ratios hold even when absolute times drift. 309 classes, 512 x 128 log-mel input.

    python benchmarks/model_speed.py [--quick] [--threads N]
    taskset -c 1 python benchmarks/model_speed.py    # pinned to one core
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from machine import cpu_model

from arinext.model.audio_config import get_preset
from arinext.model.backends import available_backends, cpu_threads, open_session
from arinext.model.bench import Timing, random_input, time_interleaved
from arinext.model.export import export_artifact
from arinext.model.manifest import INPUT_NAME, MODEL_FILE, Manifest
from arinext.model.quantize import quantize_graph, synthetic_views
from arinext.model.registry import create_model

CLASSES = 309
PRESET = "vggsound"
LEVEL_NAMES = {"none": "train form", "paper": "paper-merged", "full": "full fold"}
CALIBRATION_VIEWS = 16


@dataclass(frozen=True)
class Case:
    """One row: a network at a re-parameterisation level, in a precision, on a backend."""

    architecture: str
    level: str
    precision: str  # fp32 or int8: what the graph holds
    backend: str
    hint: str = "auto"  # OpenVINO's precision hint for fp32 graphs

    @property
    def baseline(self) -> bool:
        """The authors' merged model as they export it, on ONNX Runtime."""
        return (self.level, self.precision, self.backend) == ("paper", "fp32", "onnxruntime")


ARCHITECTURES = ("b0", "b1", "slowfast_r50")


def cases(openvino: bool, architectures: Sequence[str] = ARCHITECTURES) -> list[Case]:
    """Every row, in table order; OpenVINO rows only when it is installed."""
    rows: list[Case] = []
    for arch in (a for a in architectures if a != "slowfast_r50"):
        rows += [
            Case(arch, "none", "fp32", "onnxruntime"),
            Case(arch, "paper", "fp32", "onnxruntime"),
            Case(arch, "full", "fp32", "onnxruntime"),
            Case(arch, "full", "int8", "onnxruntime"),
        ]
        if openvino:
            rows += [
                Case(arch, "paper", "fp32", "openvino"),
                Case(arch, "full", "fp32", "openvino", hint="f32"),
                Case(arch, "full", "fp32", "openvino"),
                Case(arch, "full", "int8", "openvino"),
            ]
    if "slowfast_r50" in architectures:
        rows.append(Case("slowfast_r50", "none", "fp32", "onnxruntime"))
    return rows


def export(architecture: str, level: str, directory: Path, frames: int) -> Manifest:
    model = create_model(architecture, {PRESET: CLASSES})
    return export_artifact(
        model,
        directory,
        name=f"{architecture}-{level}",
        architecture=architecture,
        frontend=get_preset(PRESET).model_copy(update={"num_frames": frames}),
        labels={PRESET: [f"class_{i}" for i in range(CLASSES)]},
        level=level,
    )


def build_graphs(rows: list[Case], tmp: Path, frames: int) -> tuple[dict, dict]:
    """Model files per (architecture, level, precision) and manifests per (architecture, level)."""
    graphs: dict[tuple[str, str, str], Path | bytes] = {}
    manifests: dict[tuple[str, str], Manifest] = {}
    for row in rows:
        key = (row.architecture, row.level)
        if key not in manifests:
            manifests[key] = export(*key, tmp / f"{row.architecture}-{row.level}", frames)
            graphs[(*key, "fp32")] = tmp / f"{row.architecture}-{row.level}" / MODEL_FILE
            print(f"  exported {row.architecture} {row.level}", file=sys.stderr, flush=True)
        if row.precision == "int8" and (*key, "int8") not in graphs:
            views = synthetic_views(manifests[key].frontend, CALIBRATION_VIEWS, seed=0).views
            fp32 = tmp / f"{row.architecture}-{row.level}" / MODEL_FILE
            graphs[(*key, "int8")] = quantize_graph(fp32, INPUT_NAME, views)
            print(f"  quantised {row.architecture} {row.level}", file=sys.stderr, flush=True)
    return graphs, manifests


def measure(
    rows: list[Case], graphs: dict, threads: int, batch: int, runs: int, frames: int
) -> tuple[list[Timing], list[str]]:
    """Interleaved timings of every row at one batch size and thread count, and its sessions."""
    feed = {INPUT_NAME: random_input(batch, (1, frames, 128))}
    calls, descriptions = [], []
    for row in rows:
        session = open_session(
            graphs[(row.architecture, row.level, row.precision)],
            backend=row.backend,
            precision=row.hint,
            threads=threads,
        )
        calls.append(lambda s=session: s.run(s.output_names, feed))
        descriptions.append(session.description)
    timings = time_interleaved(calls, runs=runs, warmup=min(2, runs), batch=batch)
    return timings, descriptions


def precision_label(row: Case, description: str) -> str:
    """What the row really ran in: OpenVINO's auto hint picks bf16 on CPUs that have it."""
    if row.precision == "int8":
        return "int8"
    return "bf16" if "bf16" in description else "fp32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="few runs, batch 4, 128 frames: a smoke test"
    )
    parser.add_argument("--batch", type=int, default=32, help="the throughput batch (32)")
    parser.add_argument(
        "--threads", type=int, default=cpu_threads(), help="threads at --batch (default: all)"
    )
    parser.add_argument(
        "--archs",
        default=",".join(ARCHITECTURES),
        help=f"comma-separated architectures (default {','.join(ARCHITECTURES)})",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("root").setLevel(logging.ERROR)  # the quantiser's pre-processing advice
    runs1, runs32 = (3, 1) if args.quick else (30, 10)
    big = min(args.batch, 4) if args.quick else args.batch
    frames = 128 if args.quick else 512
    rows = cases("openvino" in available_backends(), args.archs.split(","))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="arinext-bench-") as tmp:
        graphs, manifests = build_graphs(rows, Path(tmp), frames)
        single, descriptions = measure(rows, graphs, 1, batch=1, runs=runs1, frames=frames)
        batched, _ = measure(rows, graphs, args.threads, batch=big, runs=runs32, frames=frames)

    versions = f"ONNX Runtime {ort.__version__}"
    openvino = next((d for d in descriptions if d.startswith("openvino")), None)
    if openvino:
        versions += f", OpenVINO {openvino.split()[1]}"
    print(
        f"CPU: {cpu_model()}, {cpu_threads()} usable of {os.cpu_count()} CPUs; {versions}; "
        f"batch 1: 1 thread, median of {runs1} runs; batch {big}: {args.threads} threads, median "
        f"of {runs32} runs; input {frames}x128, {CLASSES} classes; all rows interleaved; "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n"
    )
    print(
        "| model | form | precision | backend | params | GMACs | batch 1: ms/clip | clips/s "
        f"| vs paper ORT | batch {big}: ms/clip | clips/s | vs paper ORT |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = {
        row.architecture: (one, many)
        for row, one, many in zip(rows, single, batched, strict=True)
        if row.baseline
    }
    for row, one, many, described in zip(rows, single, batched, descriptions, strict=True):
        manifest = manifests[(row.architecture, row.level)]
        ref = base.get(row.architecture)
        ratio1 = f"{ref[0].ms_per_clip / one.ms_per_clip:.2f}x" if ref else "-"
        ratio32 = f"{ref[1].ms_per_clip / many.ms_per_clip:.2f}x" if ref else "-"
        print(
            f"| {row.architecture} | {LEVEL_NAMES[row.level]} | {precision_label(row, described)} "
            f"| {row.backend} | {manifest.num_params / 1e6:.2f}M | {manifest.gflops:.2f} "
            f"| {one.ms_per_clip:.2f} | {one.clips_per_second:.1f} | {ratio1} "
            f"| {many.ms_per_clip:.2f} | {many.clips_per_second:.1f} | {ratio32} |"
        )
    print()
    for line in summary(rows, single, batched, big):
        print(line)


def summary(rows: list[Case], single: list[Timing], batched: list[Timing], big: int) -> list[str]:
    """Per architecture: the fastest served configuration against what users of the authors'
    merged model can run (ONNX Runtime fp32; OpenVINO with its default hints)."""
    lines = []
    for arch in dict.fromkeys(r.architecture for r in rows if r.level == "full"):
        for label, timings in (("batch 1, 1 thread", single), (f"batch {big}", batched)):
            mine = {r: t for r, t in zip(rows, timings, strict=True) if r.architecture == arch}
            served = {r: t for r, t in mine.items() if r.level == "full"}
            best_row, best = min(served.items(), key=lambda item: item[1].ms_per_clip)
            theirs = {
                r.backend: t for r, t in mine.items() if r.level == "paper" and r.hint == "auto"
            }
            ratios = ", ".join(
                f"{theirs[b].ms_per_clip / best.ms_per_clip:.2f}x the paper-merged fp32 on {b}"
                for b in ("onnxruntime", "openvino")
                if b in theirs
            )
            lines.append(
                f"- {arch}, {label}: fastest served = full fold {best_row.precision} on "
                f"{best_row.backend} ({best.ms_per_clip:.2f} ms/clip): {ratios}"
            )
    return lines


if __name__ == "__main__":
    main()
