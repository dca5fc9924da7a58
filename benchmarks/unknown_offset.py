"""What a prior on ``_unknown_`` trades: recorded keywords against non-keyword speech accepted.

Adds an offset to the ``_unknown_`` logit of a keyword artifact (as if its head's bias were
larger) and, for each offset, prints top-1 on the recorded words of one split's speakers (all 35
and the ten core words) and the share of that split's synthesised ``_unknown_`` clips answered as
a keyword with score at least 0.5, each clip scored as ``arinext evaluate`` scores it (the test
views, softmax averaged). ``--write DIR --offset B`` also writes a copy of the artifact with the
offset in its head's bias (manifest checksum updated), for ``benchmarks/stream_tuning.py``.

    python benchmarks/unknown_offset.py --model service/default_model \\
        --recordings ../shared/speech_commands_subset --data-root data/synth-sc --split validation
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from arinext.model.audio_io import read_file  # noqa: E402
from arinext.model.backends import open_session  # noqa: E402
from arinext.model.frontend import log_mel_views  # noqa: E402
from arinext.model.labels import SILENCE, UNKNOWN, is_keyword  # noqa: E402
from arinext.model.manifest import MODEL_FILE, sha256_file, verify_artifact  # noqa: E402
from arinext.service.decoding import resample  # noqa: E402
from arinext.training.datasets.recordings import list_recordings  # noqa: E402

CORE = {"yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"}
LISTS = {"test": "testing_list.txt", "validation": "validation_list.txt"}


def write_offset_copy(model: Path, out: Path, offset: float) -> None:
    """``model`` with ``offset`` added to its head's ``_unknown_`` bias, verified."""
    manifest = verify_artifact(model)
    head = manifest.heads[0]
    graph = onnx.load(model / MODEL_FILE)
    node = next(n for n in graph.graph.node if head.output in n.output)
    bias = next(i for i in graph.graph.initializer if i.name == node.input[2])
    values = numpy_helper.to_array(bias).copy()
    values[head.labels.index(UNKNOWN)] += offset
    bias.CopyFrom(numpy_helper.from_array(values.astype(np.float32), bias.name))
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(model, out)
    onnx.save(graph, out / MODEL_FILE)
    data = json.loads((out / "manifest.json").read_text())
    data["sha256"] = sha256_file(out / MODEL_FILE)
    (out / "manifest.json").write_text(json.dumps(data, indent=2))
    verify_artifact(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--recordings", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, required=True, help="synth-speech-commands")
    parser.add_argument("--split", choices=sorted(LISTS), default="validation")
    parser.add_argument("--offsets", default="0,0.5,1,1.5,2,2.5,3,4")
    parser.add_argument("--write", type=Path, help="write a copy with --offset")
    parser.add_argument("--offset", type=float, default=0.0)
    args = parser.parse_args()
    if args.write:
        write_offset_copy(args.model, args.write, args.offset)
    manifest = verify_artifact(args.model)
    session = open_session(args.model / MODEL_FILE, threads=1)
    head, cfg = manifest.heads[0], manifest.frontend
    unknown = head.labels.index(UNKNOWN)

    def logits(path: Path) -> np.ndarray:
        samples, rate = read_file(path)
        samples = samples.mean(axis=1) if samples.ndim > 1 else samples
        if rate != cfg.sample_rate:
            samples = resample(samples, rate, cfg.sample_rate)
        views = log_mel_views(np.asarray(samples, np.float32), cfg)
        return np.asarray(session.run([head.output], {manifest.input: views})[0])

    said = [
        (c.word, logits(c.path))
        for c in list_recordings(args.recordings, args.split)
        if c.word != SILENCE
    ]
    listed = (args.data_root / LISTS[args.split]).read_text(encoding="utf-8").split()
    other = [logits(args.data_root / p) for p in listed if p.startswith(f"{UNKNOWN}/")]

    def scores(values: np.ndarray, offset: float) -> np.ndarray:
        shifted = values.copy()
        shifted[:, unknown] += offset
        e = np.exp(shifted - shifted.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).mean(axis=0)

    print(
        f"{manifest.name} ({manifest.precision}), {args.split} split: {len(said)} recorded "
        f"words, {len(other)} {UNKNOWN} clips of {args.data_root}\n"
    )
    print("| offset | 35 words top-1 | core top-1 | non-keyword speech accepted |")
    print("|---:|---:|---:|---:|")
    for offset in (float(o) for o in args.offsets.split(",")):
        right = [head.labels[int(scores(v, offset).argmax())] == w for w, v in said]
        core = [r for r, (w, _) in zip(right, said, strict=True) if w in CORE]
        accepted = 0
        for values in other:
            p = scores(values, offset)
            top = int(p.argmax())
            accepted += is_keyword(head.labels[top]) and p[top] >= 0.5
        print(
            f"| {offset:g} | {np.mean(right):.1%} | {np.mean(core):.1%} | "
            f"{accepted / len(other):.1%} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
