"""Where ONNX Runtime spends an artifact's inference time: its own profiler, by layer kind.

Runs the artifact as the service does (one session, the given threads; ONNX Runtime's default
graph optimisations, which on x86 rewrite convolutions to its blocked NCHWc layout, less the ones
``arinext.model.backends`` leaves off; ``--all-optimizers`` keeps those too) on random
log-mel windows, and sums ONNX Runtime's per-node kernel times over the runs. Nodes are grouped
by their name with stage and block numbers taken out (``stages.N/blocks.N/mlp/fc2``), so each
line is one kind of layer across the network.

    taskset -c 1 python benchmarks/model_profile.py service/default_model --batch 16
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from machine import cpu_model

from arinext.model.backends import ORT_DISABLED_OPTIMIZERS
from arinext.model.bench import random_input
from arinext.model.manifest import MODEL_FILE, verify_artifact

_NUMBERED = re.compile(r"(stages|blocks)\.\d+")


def layer_kind(node: str) -> str:
    """A node's name without stage and block numbers, nor ONNX Runtime's layout suffix."""
    return _NUMBERED.sub(r"\1.N", node).removesuffix("_nchwc")


def profile(
    model: Path, shape: tuple[int, ...], batch: int, runs: int, threads: int, disabled: list[str]
) -> dict:
    """Kernel microseconds a run, by operator type and by layer kind (warm-up runs left out)."""
    import onnxruntime as ort

    warmup = 5
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(
            str(model), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
        )
        feed = {session.get_inputs()[0].name: random_input(batch, shape)}
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    if len(starts) != warmup + runs:
        raise SystemExit(f"the profile holds {len(starts)} runs, not {warmup + runs}")
    by_op: collections.defaultdict[str, float] = collections.defaultdict(float)
    by_layer: collections.defaultdict[str, float] = collections.defaultdict(float)
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        if event["ts"] < starts[warmup]:
            continue
        op = event["args"].get("op_name", "?")
        us = float(event["dur"]) / runs
        by_op[op] += us
        by_layer[f"{op} {layer_kind(name.removesuffix('_kernel_time'))}"] += us
    return {"by_op": dict(by_op), "by_layer": dict(by_layer)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=12, help="layer kinds to list")
    parser.add_argument(
        "--all-optimizers",
        action="store_true",
        help=f"ONNX Runtime's rewrites as it ships them (the service leaves off "
        f"{', '.join(ORT_DISABLED_OPTIMIZERS)})",
    )
    args = parser.parse_args()

    manifest = verify_artifact(args.artifact)
    shape = (1, manifest.frontend.num_frames, manifest.frontend.n_mels)
    disabled = [] if args.all_optimizers else list(ORT_DISABLED_OPTIMIZERS)
    result = profile(
        args.artifact / MODEL_FILE, shape, args.batch, args.runs, args.threads, disabled
    )
    total = sum(result["by_op"].values())
    print(
        f"{cpu_model()}; {manifest.name} ({manifest.precision}), batch {args.batch}, "
        f"{args.threads} thread(s), {args.runs} runs"
        f"{', all optimizers' if args.all_optimizers else ''}: {total / 1000:.3f} ms a run, "
        f"{total / 1000 / args.batch:.3f} ms a window (kernel time)\n"
    )
    print("| operator | ms a run | share |\n|---|---:|---:|")
    for op, us in sorted(result["by_op"].items(), key=lambda kv: -kv[1]):
        print(f"| {op} | {us / 1000:.3f} | {100 * us / total:.1f} % |")
    print("\n| layer kind | ms a run | share |\n|---|---:|---:|")
    ranked = sorted(result["by_layer"].items(), key=lambda kv: -kv[1])
    for layer, us in ranked[: args.top]:
        print(f"| {layer} | {us / 1000:.3f} | {100 * us / total:.1f} % |")


if __name__ == "__main__":
    main()
